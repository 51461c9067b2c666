# The README's commands. `make demo` and `make test` work on a fresh machine with only python3.
VENV ?= .venv
PY := $(VENV)/bin/python
AUGKD := $(VENV)/bin/augkd
DEMO_RUN ?= runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: venv demo test test-interpret check bench wheel-check clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned to the build these machines serve from disk (a range in pyproject admits it)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[data,dev]'
	touch $@

venv: $(VENV)/.installed

# Distil the ccexam MNIST teacher into a small CNN on MNIST-M with 10 labelled images per class
# (configs/mnist-mnistm-10shot.yaml, the headline benchmark's seed 0), export, time.
demo: venv
	@if [ -f $(DEMO_RUN)/config.yaml ]; then \
		$(AUGKD) distill --resume $(DEMO_RUN); \
	else \
		$(AUGKD) distill -c configs/mnist-mnistm-10shot.yaml --out $(DEMO_RUN); \
	fi
	$(AUGKD) export $(DEMO_RUN)
	$(AUGKD) bench latency $(DEMO_RUN) --backends torch,ort,ort-int8 --batch 1,32

test: venv
	$(VENV)/bin/pytest -m "not gpu" -n 2 --timeout 900 -q

test-interpret: venv
	TRITON_INTERPRET=1 $(VENV)/bin/pytest -m interpret tests/kernels -q

check: venv
	$(VENV)/bin/ruff check augkd kernels export tests benchmarks
	$(VENV)/bin/ruff format --check augkd kernels export tests benchmarks

# Build the wheel, install it in a clean venv and import the mapped packages from it (not from the tree).
# The clean venv borrows the dependencies (torch, ...) of $(VENV) through a plain .pth path line, which does
# not activate $(VENV)'s editable finder, so augkd can only come from the wheel.
wheel-check: venv
	rm -rf dist build/wheel-venv
	$(PY) -m build --wheel --outdir dist . > /dev/null
	python3 -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install --quiet --no-deps dist/augkd-*.whl
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$$(build/wheel-venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/augkd-deps.pth"
	cd /tmp && $(CURDIR)/build/wheel-venv/bin/python -c "import augkd, augkd.kernels, augkd.export, augkd.cli; f = augkd.kernels.__file__; assert 'wheel-venv' in f and 'wheel-venv' in augkd.export.__file__, f; print('wheel ok:', f, augkd.export.__file__)"

clean:
	rm -rf build dist *.egg-info
