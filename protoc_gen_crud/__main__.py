"""`python -m protoc_gen_crud` runs the plugin, as `protoc-gen-crud` does."""

from .plugin import main

raise SystemExit(main())
