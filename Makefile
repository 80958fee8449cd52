# speechkd — two commands do everything on a fresh machine:
#   make quickstart   build the embedded corpus, train teachers, distil a student, print the report
#   make test         run the test suite
# Both create .venv and install what is missing (Python packages from PyPI,
# Debian packages with apt-get when run as root).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.speechkd-installed
DEB_PACKAGES := fortunes fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-cs fortunes-pl fortunes-eo fortunes-bg \
                festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k festvox-itapc16k festvox-ru flite

.PHONY: quickstart test venv debs lint bench clean

quickstart: venv debs
	$(PY) -m speechkd.cli run hparams/pipelines/quickstart.yaml

test: venv debs
	$(PY) -m pytest tests

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[export,dev,bench,voices]"
	@touch $(STAMP)

# Debian text sources for the `sentences` corpus task (fortunes-*) and the corpus
# voices of recorded people (festival + festvox voices, flite).
debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)) \
	      || { echo "apt-get install failed for:$$missing"; exit 1; }; \
	  else \
	    echo "speechkd needs Debian packages:$$missing"; \
	    echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

lint: venv
	$(VENV)/bin/ruff check speechkd recipes tests benchmarks

clean:
	rm -rf results build *.egg-info
