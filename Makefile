# The README's two commands. Both bootstrap first (Debian packages, the virtualenv; cached).
VENV_BIN := $(shell echo $${OPTIMODEL_CACHE:-$$HOME/.cache/optimodel})/venv/bin

.PHONY: demo test bootstrap

bootstrap:
	@deploy/bootstrap.sh >/dev/null
	@$(VENV_BIN)/optimodel dev build >/dev/null

# Local cluster up, the operator installed in it, the digits example optimized, served and answering a request.
demo: bootstrap
	$(VENV_BIN)/optimodel demo

# The whole suite: unit, integration (real control plane) and end-to-end tiers, always all of them, whatever the
# environment says: no PYTEST_ARGS, every PYTEST_* variable dropped (PYTEST_ADDOPTS="-m 'not cluster'" would drop two
# tiers), and `--whole-suite` (tests/conftest.py) stops before any test runs when a tier has no selected test or
# anything is deselected. For a part of the suite, run pytest itself.
# pytest's exit code 5 means "no tests collected": that is a failure here, never green.
# The last line repeats the counts (tests/counts_line.py), deselected tests and each tier included.
RESULTS := $(shell echo $${TMPDIR:-/tmp})/optimodel-pytest-results.xml
SELECTION := $(shell echo $${TMPDIR:-/tmp})/optimodel-pytest-selection.json
test: bootstrap
	@rm -f $(RESULTS) $(SELECTION); \
	for name in $$(env | sed -n 's/^\(PYTEST_[A-Za-z0-9_]*\)=.*/\1/p'); do echo "make test: $$name is ignored (the whole suite runs; for a part of it, run pytest)" >&2; unset $$name; done; \
	$(VENV_BIN)/python -m pytest --whole-suite=$(SELECTION) --junitxml=$(RESULTS) tests; rc=$$?; \
	$(VENV_BIN)/python tests/counts_line.py $(RESULTS) $(SELECTION); \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
