# The two commands a newcomer needs (see README): `make run` and `make test`.
.PHONY: run test bootstrap

run: ## Run the whole system on the embedded default (no cloud needed).
	cargo run --release --bin challenge-latam-api

test: ## Every check CI runs: fmt, clippy, tests, rules, dashboards, terraform, workflows.
	scripts/test.sh

bootstrap: ## Install the offline tools the checks use (.tools/venv, Debian packages).
	scripts/bootstrap.sh
