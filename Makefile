# petuum_mpi -- the two commands of the README:
#   make demo   set up .venv, prepare the sample data, run the Lasso job on 2 ranks, plot it
#   make test   set up .venv and run every test (serial + MPI at 1, 2 and 4 ranks)
#
# On a cluster, use the site's MPI instead of the bundled mpich wheel:
#   make setup EXTRAS=test      (mpi4py is then built against the mpicc on PATH)

PYTHON  ?= python3
VENV    ?= .venv
EXTRAS  ?= mpich,test
RANKS   ?= 2
PY      := $(VENV)/bin/python
CLI     := $(VENV)/bin/petuum-mpi
STAMP   := $(VENV)/.petuum-installed-$(subst $(comma),-,$(EXTRAS))
comma   := ,

.PHONY: setup demo test bench data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("petuum_mpi needs Python >= 3.10") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

data: setup data/lasso_sample/manifest.json

data/lasso_sample/manifest.json: data/lasso_sample.svm
	$(CLI) data convert libsvm data/lasso_sample.svm data/lasso_sample --task regression --shards 4 --overwrite

demo: data
	$(CLI) launch -n $(RANKS) jobs/lasso.toml --set run.name=demo-lasso --set run.output_dir=runs
	$(CLI) plot runs/demo-lasso
	@echo "demo: results in runs/demo-lasso (summary.json, metrics.jsonl, model.h5), plot runs/demo-lasso/plots/convergence.png"

test: setup
	$(PY) tests/run_suite.py

bench: setup
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	@echo "see benchmarks/README.md for the benchmark commands"

clean:
	rm -rf runs .pytest_cache build src/*.egg-info
