# The README's two commands. Both bootstrap first (Debian packages, the virtualenv; cached).
VENV_BIN := $(shell echo $${OPTIMODEL_CACHE:-$$HOME/.cache/optimodel})/venv/bin

.PHONY: demo test bootstrap

bootstrap:
	@deploy/bootstrap.sh >/dev/null
	@$(VENV_BIN)/optimodel dev build >/dev/null

# Local cluster up, operator running, the example OptimizedModel applied, its status printed.
demo: bootstrap
	$(VENV_BIN)/optimodel demo

# The whole suite: unit, integration (real control plane) and end-to-end tiers.
# pytest's exit code 5 means "no tests collected": that is a failure here, never green.
test: bootstrap
	@$(VENV_BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
