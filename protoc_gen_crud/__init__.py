"""protoc-gen-crud: annotated protobuf messages in, a complete CRUD backend out."""

__version__ = "0.1.0"
