"""The model's rules, one module per section of options.proto; `builder.Builder` joins them."""
