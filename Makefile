# The two commands a newcomer needs: `make study` (runs the study, builds the book) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: test study book publish pages venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,study,runtimes]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The study: the five chapters with papermill on profile $(PROFILE) (profiles.yaml) into
# runs/$(PROFILE)/, then that run's own book in runs/$(PROFILE)/book (jupyter-book build -W -n
# --keep-going); it prints the book's path. Rerun to resume. Never writes into book/.
study: venv
	$(PY) -m ds.study run --profile $(PROFILE) $(STUDY_ARGS)

# Rebuild the book of a finished run inside its run directory.
book: venv
	$(PY) -m ds.study book --profile $(PROFILE)

# The only way book/ changes: a complete, current run of a publishable profile goes into book/,
# assembled and built beside it, then swapped in.
publish: venv
	$(PY) -m ds.study publish --profile $(PROFILE)

# Regenerate the pages made from the repository (book/reproduce.md, the intro's diagram).
pages: venv
	$(PY) -m ds.study pages

clean:
	rm -rf $(VENV) book/_build .pytest_cache
