# The README's two commands: `make run` and `make test`. Everything else is
# here for developers. All targets use the project's own virtualenv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install run test proto catalog bench chaos lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Start control plane, proxy and simulated providers; Ctrl-C stops them.
run: install
	$(VENV)/bin/megarouter up

## Install test dependencies (incl. the etcd server and chromium, via apt) and run the whole suite.
test: install
	bash scripts/install_etcd.sh || echo "etcd could not be installed: its store tests will be skipped"
	bash scripts/install_browser.sh || echo "chromium could not be installed: the console's browser tests will be skipped"
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Regenerate the committed gRPC/protobuf stubs from protos/.
proto: install
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. --pyi_out=. \
		protos/megarouter/v1/*.proto

## Rebuild megarouter/catalog/models.json from genai-prices' bundled data (offline).
catalog: install
	$(PY) scripts/build_catalog.py

## Proxy throughput, CPU and latency overhead (see bench/README.md).
bench: install
	$(PY) bench/proxy_bench.py

## Failover under scripted provider faults (see bench/README.md).
chaos: install
	$(PY) bench/chaos.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .megarouter .pytest_cache
