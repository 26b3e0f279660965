# The two commands a newcomer needs: `make study` (runs the study, builds the book) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: test study book venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,study,runtimes]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The study: the five chapters with papermill on profile $(PROFILE) (profiles.yaml) into
# runs/$(PROFILE)/, then the book (jupyter-book build -W -n --keep-going). Rerun to resume.
study: venv
	$(PY) -m ds.study run --profile $(PROFILE) $(STUDY_ARGS)

# Publish a finished run into book/ and rebuild the book only.
book: venv
	$(PY) -m ds.study book --profile $(PROFILE)

clean:
	rm -rf $(VENV) book/_build .pytest_cache
