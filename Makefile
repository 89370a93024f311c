# The two commands a newcomer needs (see README): `make run` and `make test`.
.PHONY: run test bootstrap gen help demo fault verify

# scripts/build.sh is the build `make test` runs too: cargo unifies features over the packages
# it builds, so `cargo run --bin` alone would compile the library a second time.
run: ## Run the whole system on the embedded default (no cloud needed).
	scripts/build.sh
	exec target/release/challenge-latam-api

test: ## Every check CI runs: fmt, clippy, tests, rules, dashboards, terraform, workflows.
	scripts/test.sh

demo: ## The on-call stack on 127.0.0.1 (Prometheus, Alertmanager, a receiver, k6); DEMO_MINUTES=30.
	scripts/demo.sh

fault: ## Break the running demo: KIND=errors|latency|broker|store|random|clear.
	scripts/demo.sh fault $(KIND)

verify: ## Check your answer to the demo's exercise: ANSWER=errors|latency|broker|store.
	scripts/demo.sh verify $(ANSWER)

bootstrap: ## Install the offline tools the checks use (.tools/venv, Debian packages).
	scripts/bootstrap.sh

gen: ## Regenerate every generated file, in order: tools/slo (rules, tests, Terraform data, dashboards/slo-model.json), then the dashboards.
	cargo run -q --locked -p slo -- generate
	.tools/venv/bin/python dashboards/generate.py

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
