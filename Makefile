# Two entry points for a fresh machine (see README):
#   make demo   set up a virtualenv and run the main job on the embedded SQLite store
#   make test   set up, make sure PostGIS is running, lint, type-check and run every test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: setup demo test lint typecheck pytest postgis browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/gridgov demo

postgis:
	bash scripts/ensure-postgis.sh

browser:
	bash scripts/ensure-chromium.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The PostGIS and browser tests must run here, never skip: the GRIDGOV_REQUIRE_* variables turn
# a skip into a failure.
pytest: setup postgis browser
	GRIDGOV_REQUIRE_POSTGIS=1 GRIDGOV_REQUIRE_BROWSER=1 $(BIN)/pytest -n auto

test: lint typecheck pytest

bench: setup postgis browser
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/locate.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/map_load.py
	$(BIN)/python bench/api_load.py

clean:
	rm -rf $(VENV) gridgov.db .pytest_cache .mypy_cache .ruff_cache
