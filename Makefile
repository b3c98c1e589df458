# icibenefit: `make run` runs the demo, `make test` runs every test.
# Both set up everything they need first (Debian peers, the Python venv, the
# npm packages of the test FHIR server) and skip what is already in place.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMPS := .stamps
FHIR_SERVER := tests/peers/fhir_server
# The OHIF viewer the viewer tests open: @ohif/app's prebuilt dist/, pinned by
# version and by the registry's sha512 integrity (npm pack, no dependency tree).
OHIF_VERSION := 3.13.2
OHIF_INTEGRITY := sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
OHIF_DIR := tests/peers/ohif
DEB_PACKAGES := orthanc orthanc-dicomweb dcmtk dicom3tools r-base-core r-cran-proc r-cran-survival iproute2 util-linux systemd docker-compose chromium chromium-driver pixelmed-apps default-jre-headless poppler-utils
# Tests run in a private network namespace with only loopback up, so no peer
# (Orthanc listens on every interface) is ever reachable from outside.  Where
# namespaces are not permitted, they run on the host's loopback.
ISOLATE := $(shell unshare --net true 2>/dev/null && echo "unshare --net")
PYTEST_ARGS ?=
# Tests decode tool output as UTF-8 whatever the CI machine's locale is.
export PYTHONUTF8 := 1
# Screenshots of the browser tests (status page, OHIF) are kept here as test artefacts.
export ICIBENEFIT_TEST_ARTIFACTS ?= $(CURDIR)/test-artifacts

.PHONY: setup run test test-unit test-integration wheel-check bench lint format clean

setup: $(STAMPS)/debian $(STAMPS)/venv $(STAMPS)/npm $(STAMPS)/ohif

$(STAMPS)/debian: Makefile
	@mkdir -p $(STAMPS)
	@# Node.js may come from Debian or NodeSource (which bundles npm): only the commands matter.
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
	  command -v npm >/dev/null || echo nodejs npm); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	@# pyradiomics 3.0.1 builds against the numpy already installed (ENVIRONMENT.md).
	$(PIP) install -q "numpy>=2.0,<2.4" versioneer
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-build-isolation pyradiomics==3.0.1
	$(PIP) install -q -e ".[dev]"
	@touch $@

$(STAMPS)/npm: $(FHIR_SERVER)/package.json $(STAMPS)/debian
	cd $(FHIR_SERVER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMPS)/ohif: Makefile $(STAMPS)/debian
	rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack @ohif/app@$(OHIF_VERSION) --silent --loglevel=error >/dev/null
	@test "sha512-$$(openssl dgst -sha512 -binary $(OHIF_DIR)/ohif-app-$(OHIF_VERSION).tgz | base64 -w0)" \
	  = "$(OHIF_INTEGRITY)" || { echo "@ohif/app tarball integrity mismatch"; exit 1; }
	tar xzf $(OHIF_DIR)/ohif-app-$(OHIF_VERSION).tgz -C $(OHIF_DIR) package/dist
	mv $(OHIF_DIR)/package/dist $(OHIF_DIR)/dist && rm -r $(OHIF_DIR)/package $(OHIF_DIR)/*.tgz
	echo $(OHIF_VERSION) > $(OHIF_DIR)/VERSION
	@touch $@

run: setup
	$(VENV)/bin/icibenefit demo

test: setup lint wheel-check
	$(ISOLATE) bash -c 'ip link set lo up 2>/dev/null; $(PY) -m pytest $(PYTEST_ARGS)'

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(ISOLATE) bash -c 'ip link set lo up 2>/dev/null; $(PY) -m pytest -m integration $(PYTEST_ARGS)'

# A wheel installed without -e in a fresh venv must pass the unit tests: this
# catches subpackages or data files missing from pyproject.toml.  Third-party
# packages are borrowed from the dev venv through a .pth path entry (whose own
# .pth files, including the editable install, are not processed).
wheel-check: setup
	rm -rf build dist $(STAMPS)/wheelvenv
	$(PY) -m build --wheel --no-isolation --outdir dist . >/dev/null
	$(PYTHON) -m venv $(STAMPS)/wheelvenv
	$(STAMPS)/wheelvenv/bin/pip install -q --no-deps --no-index dist/*.whl
	$(PY) -c "import site; print(site.getsitepackages()[0])" \
	  > $$($(STAMPS)/wheelvenv/bin/python -c "import site; print(site.getsitepackages()[0])")/devdeps.pth
	cd /tmp && $(CURDIR)/$(STAMPS)/wheelvenv/bin/python -P -c \
	  "import icibenefit, icibenefit.fhir, fhir.resources; assert 'wheelvenv' in icibenefit.__file__, icibenefit.__file__"
	cd /tmp && $(CURDIR)/$(STAMPS)/wheelvenv/bin/python -P -m pytest -q -p no:cacheprovider \
	  --rootdir=$(CURDIR) -c $(CURDIR)/pyproject.toml $(CURDIR)/tests/unit

bench: setup
	$(ISOLATE) bash -c 'ip link set lo up 2>/dev/null; $(PY) -m tests.bench'

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# mypy cannot follow setuptools' package-dir mapping, so it checks a symlink
	@# tree laid out like the installed package.
	@rm -rf $(STAMPS)/typecheck && mkdir -p $(STAMPS)/typecheck/icibenefit
	@for f in icibenefit/*; do ln -s ../../../$$f $(STAMPS)/typecheck/icibenefit/; done
	@for d in listener pipeline fhir reporting model_store training synth; do \
	  ln -s ../../../$$d $(STAMPS)/typecheck/icibenefit/$$d; done
	@# Caches live outside the tree rebuilt above, one per option set.
	cd $(STAMPS)/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
	  --cache-dir ../mypy-cache -p icibenefit
	@# The serving path (inference, reporting, service) is held to --strict.
	cd $(STAMPS)/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
	  --cache-dir ../mypy-cache-strict --strict --follow-imports=silent \
	  -p icibenefit.pipeline -p icibenefit.listener -p icibenefit.reporting
	@# Layers and the serving/training split (pyproject's [tool.importlinter]), on the
	@# same tree: import-linter, like mypy, walks folders and cannot see package-dir.
	cd $(STAMPS)/typecheck && PYTHONPATH=. ../../$(VENV)/bin/lint-imports --config ../../pyproject.toml --no-cache

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build dist $(STAMPS) .mypy_cache .ruff_cache .pytest_cache
