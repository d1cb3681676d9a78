# The README's two commands. Both bootstrap first (Debian packages, the virtualenv; cached).
VENV_BIN := $(shell echo $${OPTIMODEL_CACHE:-$$HOME/.cache/optimodel})/venv/bin

.PHONY: demo test bootstrap

bootstrap:
	@deploy/bootstrap.sh >/dev/null
	@$(VENV_BIN)/optimodel dev build >/dev/null

# Local cluster up, the operator installed in it, the digits example optimized, served and answering a request.
demo: bootstrap
	$(VENV_BIN)/optimodel demo

# The whole suite: unit, integration (real control plane) and end-to-end tiers.
# pytest's exit code 5 means "no tests collected": that is a failure here, never green.
# The last line repeats pytest's counts: torch's triton prints noise at interpreter exit, after pytest's own.
RESULTS := $(shell echo $${TMPDIR:-/tmp})/optimodel-pytest-results.xml
test: bootstrap
	@rm -f $(RESULTS); $(VENV_BIN)/python -m pytest --junitxml=$(RESULTS) $(PYTEST_ARGS); rc=$$?; \
	if [ -f $(RESULTS) ]; then $(VENV_BIN)/python -c "import sys, xml.etree.ElementTree as ET; \
	s = ET.parse(sys.argv[1]).getroot(); s = s if s.tag == 'testsuite' else s.find('testsuite'); \
	n, f, e, k = (int(s.get(a, 0)) for a in ('tests', 'failures', 'errors', 'skipped')); \
	print(f'\\ntests: {n - f - e - k} passed, {f + e} failed, {k} skipped')" $(RESULTS); fi; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
