# SakaiBot: `make demo` runs the whole pipeline offline, `make test` runs the tests,
# `make install-prod` installs the bot alone (no test tools) for going live.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# workerd, Cloudflare's open-source Workers runtime, runs the shipped cloudflare/
# scripts in tests/integration/test_cloudflare_workers.py. Pinned; installed from
# npm with the machine's Node.js into a git-ignored folder.
WORKERD_VERSION := 1.20261117.1
WORKERD_DIR := .tools/workerd
WORKERD_STAMP := $(WORKERD_DIR)/.installed-$(WORKERD_VERSION)

VENV_HINT := On Debian and Ubuntu, creating a venv needs: sudo apt install python3-venv

.PHONY: install install-prod demo test test-redis-oldest bench check lint format typecheck clean workerd translations

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) with $(PYTHON) ($(VENV_HINT))..."
	@$(PYTHON) -m venv $(VENV) || { echo "$(VENV_HINT)"; exit 1; }
	@echo "Installing SakaiBot and its test tools into $(VENV) (the first time takes a minute or two)..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)
	@echo "Installed: $$($(BIN)/sakaibot --version)."

# The bot alone, without the test tools, from a copy of the source: what a live
# bot runs (docs/image-generation/quickstart.md). Add Redis with EXTRAS=redis.
install-prod:
	@echo "Creating $(VENV) with $(PYTHON) ($(VENV_HINT))..."
	@$(PYTHON) -m venv $(VENV) || { echo "$(VENV_HINT)"; exit 1; }
	@echo "Installing SakaiBot into $(VENV)..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet '.$(if $(EXTRAS),[$(EXTRAS)])'
	@echo "Installed: $$($(BIN)/sakaibot --version). Next: cp .env.example .env, then $(BIN)/sakaibot verify"

demo: $(STAMP)
	@echo "Running the demo: the console front end and the development worker on 127.0.0.1,"
	@echo "offline; data in out/demo/local-data (never the bot's data folder)."
	@echo
	@OPENROUTER_API_KEY= GEMINI_API_KEY= $(BIN)/sakaibot --env-file none chat --local --out out/demo \
		--worker-latency-ms 2500 < scripts/demo_conversation.txt
	@echo
	@echo "The images are in out/demo/. To go live, see docs/image-generation/quickstart.md."

test: $(STAMP) workerd
	$(BIN)/pytest -q

workerd: $(WORKERD_STAMP)

# The Redis tests again with the oldest redis-py that pyproject.toml allows, so
# its lower bound stays true (the venv has the newest). CI runs it after `make test`.
REDIS_OLDEST := $(shell sed -n 's/^  "redis>=\([0-9.]*\)",$$/\1/p' pyproject.toml)
REDIS_OLDEST_DIR := .tools/redis-py-$(REDIS_OLDEST)
test-redis-oldest: $(STAMP)
	@test -n "$(REDIS_OLDEST)" || { echo "no redis lower bound found in pyproject.toml"; exit 1; }
	@test -f $(REDIS_OLDEST_DIR)/.installed || { \
		echo "Installing redis==$(REDIS_OLDEST) into $(REDIS_OLDEST_DIR)..."; \
		$(BIN)/python -m pip install --quiet --no-deps --target $(REDIS_OLDEST_DIR) \
			"redis==$(REDIS_OLDEST)" && touch $(REDIS_OLDEST_DIR)/.installed; }
	PYTHONPATH=$(CURDIR)/$(REDIS_OLDEST_DIR) $(BIN)/python -c \
		"import redis; assert redis.__version__ == '$(REDIS_OLDEST)', redis.__version__"
	PYTHONPATH=$(CURDIR)/$(REDIS_OLDEST_DIR) $(BIN)/pytest -q -p no:cacheprovider tests/unit/shared \
		tests/integration/test_redis_mode.py tests/integration/test_backends.py

# Best effort: without npm or the registry the workerd tests skip and say why
# (under CI=true they fail instead), so this never stops `make test` by itself.
$(WORKERD_STAMP):
	@if command -v npm >/dev/null 2>&1 && npm install --prefix $(WORKERD_DIR) --no-save \
		--no-audit --no-fund --loglevel=error --fetch-retries=1 --fetch-timeout=30000 \
		workerd@$(WORKERD_VERSION); then \
		touch $@; \
	else \
		echo "warning: could not install workerd $(WORKERD_VERSION) with npm;" \
			"the Cloudflare worker tests will be skipped"; \
	fi

# Figures go to out/benchmarks.md (not committed); `make bench REPORT=docs/benchmarks.md`
# updates the committed page. Progress is shown as it runs (a few minutes).
REPORT ?= out/benchmarks.md
bench: $(STAMP)
	@mkdir -p out
	$(BIN)/python benchmarks/run.py --report $(REPORT) > out/benchmarks.json
	@echo "Figures: $(REPORT) (all of them as JSON: out/benchmarks.json)"

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

format: $(STAMP)
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/ruff check --fix src tests scripts benchmarks

clean:
	rm -rf $(VENV) out .tools .pytest_cache .mypy_cache .ruff_cache

# The message catalogues (docs/image-generation/translations.md): collect every
# message from the source into the template, bring each language's .po up to
# date with it (new messages untranslated, changed ones fuzzy), compile the .mo
# files the bot reads. Then translate what `make test` reports as missing and
# run it again. Both .po and .mo are committed.
LOCALE := src/sakaibot/locale
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -o $(LOCALE)/sakaibot.pot --project=SakaiBot \
		--no-location --sort-output --no-wrap src/sakaibot
	$(BIN)/pybabel update -i $(LOCALE)/sakaibot.pot -d $(LOCALE) -D sakaibot --no-wrap \
		--ignore-obsolete
	$(BIN)/pybabel compile -d $(LOCALE) -D sakaibot --statistics
