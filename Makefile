# Conveniences; the README's two commands need none of this.
.PHONY: generate test dev

CONFIG ?= configs/product.textproto

generate:
	./generate-backend.sh $(CONFIG)

test:
	scripts/test.sh

# The generated backend on this machine without Docker (PostgreSQL, Redis, crud-relay, the
# gateway; PostgREST when on the PATH), regenerated and re-applied on every edit of CONFIG.
# Needs root (network namespace) and the system packages of scripts/setup.sh --system.
dev:
	scripts/setup.sh --system
	.venv/bin/crud-dev $(CONFIG) -o generated $(ARGS)
