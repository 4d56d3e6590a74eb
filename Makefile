# The two commands of the README. Both create .venv if missing and install idempotently.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test venv bench evidence clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/smartmeter meter run --banner

test: $(STAMP)
	sh scripts/install_browser.sh
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/profile_decode.py
	$(BIN)/python benchmarks/metrology.py
	$(BIN)/python benchmarks/security.py
	$(BIN)/python benchmarks/events.py
	$(BIN)/python benchmarks/tariff_billing.py
	$(BIN)/python benchmarks/push_listener.py
	$(BIN)/python benchmarks/firmware_transfer.py
	$(BIN)/python benchmarks/mbus_decode.py
	$(BIN)/python benchmarks/consumer_push.py
	$(BIN)/python benchmarks/hes_scale.py

# The WELMEC 7.2 evidence: every test marked @pytest.mark.welmec(...), then docs/welmec/matrix.md
# with each test's outcome and the software identification of this tree (an examination
# report's start). The matrix is written even when a test fails: it then says which.
EVIDENCE_XML := $(VENV)/evidence-junit.xml
evidence: $(STAMP)
	sh scripts/install_browser.sh
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist loadfile -m welmec -p no:cacheprovider --junitxml=$(EVIDENCE_XML) -o junit_family=xunit1; \
	status=$$?; \
	$(BIN)/python scripts/welmec_docs.py --junit $(EVIDENCE_XML) --command "make evidence" && exit $$status

clean:
	rm -rf $(VENV) meter-data
