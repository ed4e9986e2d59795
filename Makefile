# The two commands of the README: `make demo` (the main job) and `make test` (every check).
# Each creates or reuses the virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test sync readme nbs docs docs-serve lab clean-venv

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

# Small CPU models run fastest single-threaded, and the test runner runs two notebooks at once.
export OMP_NUM_THREADS ?= 1

## the main job on the embedded digits data: CE against SuperCM, 3 seeds
demo: $(STAMP)
	$(BIN)/supercm_experiments compare --dataset digits --labels 50 --seeds 0 1 2 --out runs/demo

## notebooks and library in sync, notebooks clean, README current, notebooks and tests pass, docs build
test: $(STAMP) sync
	$(BIN)/nbdev_test --n_workers 2
	$(MAKE) docs
	$(BIN)/pytest tests/ -q -n 2 --dist loadfile

sync: $(STAMP)
	$(BIN)/nbdev_export
	@git diff --exit-code --stat -- supercm_nb && test -z "$$(git status --porcelain -- supercm_nb)" \
	  || (echo "supercm_nb/ differs from the notebooks: run nbdev_export and commit"; exit 1)
	$(BIN)/nbdev_clean
	@git diff --exit-code --stat -- nbs || (echo "notebooks are not clean: run nbdev_clean and commit"; exit 1)
	$(BIN)/python docs/make_readme.py --check

## refresh README.md from nbs/index.ipynb
readme: $(STAMP)
	$(BIN)/python docs/make_readme.py

## re-execute notebooks in place (fast cells; FLAGS="slow" to include slow ones), then clean them
nbs: $(STAMP)
	$(BIN)/python docs/run_nbs.py $(NBS) --flags "$(FLAGS)"
	$(BIN)/nbdev_clean

## build the documentation site into docs/_build/html (offline)
docs: $(STAMP)
	$(BIN)/python docs/build.py

## serve the built site on http://localhost:8000
docs-serve:
	$(BIN)/python -m http.server -d docs/_build/html 8000

## open the notebooks in JupyterLab (installed by the dev extra)
lab: $(STAMP)
	cd nbs && ../$(BIN)/jupyter lab

clean-venv:
	rm -rf $(VENV)
