# tpm-provision: a plain Makefile that packagers can drive (STYLE.md 11).
# Honours CC, CFLAGS, CPPFLAGS, LDFLAGS, PKG_CONFIG, DESTDIR and prefix. WERROR=1 (CI) makes
# warnings errors; SANITIZE=1 builds with AddressSanitizer and UBSan.

VERSION     := 0.1
PKG_CONFIG  ?= pkg-config
CC          ?= cc
prefix      ?= /usr
sbindir     ?= $(prefix)/sbin
BUILD       ?= build

PKGS := tss2-esys tss2-mu tss2-rc tss2-tctildr libsystemd libcrypto libssl libcurl json-c
# Compiled against, not linked: agent/dps/curl-api.c dlopen()s libcurl (and reaches libssl
# through it) when a request is about to be made.
DLOPEN_PKGS := libssl libcurl

CFLAGS      ?= -O2 -g
WARN        := -Wall -Wextra -Wshadow -Wformat=2 -Wno-missing-field-initializers
HARDEN      := -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=2
HARDEN_LD   := -pie -Wl,-z,relro,-z,now -Wl,--as-needed
ifeq ($(WERROR),1)
WARN        += -Werror
endif
ifeq ($(SANITIZE),1)
HARDEN      := -fsanitize=address,undefined -fno-omit-frame-pointer
HARDEN_LD   := -fsanitize=address,undefined
endif

# The clock floor: no clock on a device running this build can be earlier than the build.
# SOURCE_DATE_EPOCH keeps package builds reproducible; else the last commit's time.
ifeq ($(origin BUILD_EPOCH),undefined)
BUILD_EPOCH := $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),$(shell date +%s))
endif

# Recursively expanded on purpose: pkg-config runs when a recipe needs it, after the
# dependency check of `make check` and `make demo` had its chance to install packages.
PKG_CFLAGS   = $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS     = $(shell $(PKG_CONFIG) --libs $(filter-out $(DLOPEN_PKGS),$(PKGS)))
ALL_CFLAGS   = -std=gnu11 -D_GNU_SOURCE $(WARN) $(HARDEN) -Iagent -DVERSION='"$(VERSION)"' -DBUILD_EPOCH=$(BUILD_EPOCH) $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS  = $(HARDEN_LD) $(LDFLAGS)

AGENT_SRCS  := $(wildcard agent/*.c agent/*/*.c)
AGENT_OBJS  := $(AGENT_SRCS:%.c=$(BUILD)/obj/%.o)
# Everything but main: the unit tests link against the same objects.
LIB_OBJS    := $(filter-out $(BUILD)/obj/agent/main.o,$(AGENT_OBJS))

UNIT_SRCS   := $(wildcard tests/unit/test-*.c)
UNIT_BINS   := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all check check-unit check-integration check-power-cut check-sanitize check-valgrind coverage \
        demo deps install clean format fuzz

all: $(BUILD)/tpm-provision

$(BUILD)/tpm-provision: $(AGENT_OBJS)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# A test may need extra link flags (say, -Wl,--wrap=sd_journal_sendv): tests/unit/NAME.ldflags.
$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(ALL_LDFLAGS) $(shell cat tests/unit/$*.ldflags 2>/dev/null) \
		-o $@ $< $(LIB_OBJS) $(PKG_LIBS) -lcmocka

-include $(AGENT_OBJS:.o=.d)

deps:
	@tests/deps.sh

# The README's two commands.
check: deps
	@$(MAKE) --no-print-directory all unit-bins
	@tests/run-tests.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/demo.sh

unit-bins: $(UNIT_BINS)

check-unit: unit-bins
	@tests/run-tests.sh --unit-only

# A power cut and a killed agent at every TPM command of a first boot (tests/power-cut).
check-power-cut: deps
	@$(MAKE) --no-print-directory all
	@tests/power-cut/run.sh

# The unit and integration tests against an ASan/LSan/UBSan build (build/asan); the main
# flows under valgrind; line coverage of agent/ by the tests (build/cov, docs/coverage.md).
check-sanitize: deps
	@tests/sanitize/run.sh

check-valgrind: deps
	@tests/valgrind/run.sh

coverage: deps
	@tests/coverage/run.sh

# libFuzzer targets for everything parsed from outside; FUZZ_SECONDS per target (default 30).
fuzz:
	@tests/fuzz/run.sh

# Benchmarks (bench/): TPM commands and times, HTTP requests and TLS handshakes, footprint,
# a fleet against a rate-limited DPS; writes bench/RESULTS.md. `bench/run.py PART` measures
# one part again; BENCH_RUNS, FLEET_DEVICES, FLEET_RATE change the defaults.
.PHONY: bench
bench: deps
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 bench/run.py

install: all
	install -d $(DESTDIR)$(sbindir)
	install -m 0755 $(BUILD)/tpm-provision $(DESTDIR)$(sbindir)/tpm-provision

format:
	clang-format -i $(AGENT_SRCS) $(wildcard agent/*.h agent/*/*.h) $(UNIT_SRCS)

clean:
	rm -rf $(BUILD)

# ---- Boot integration: systemd units, udev rules, dracut module, initramfs-tools files ----
# Install directories default to what pkg-config says (boot-integration.md 5.3); each can be
# overridden (Yocto: unitdir=$${systemd_system_unitdir}). `make check-boot` boots a Debian 12
# kernel in qemu with the dracut and initramfs-tools images (tests/boot/README.md).
sysconfdir        ?= /etc
unitdir           ?= $(or $(shell $(PKG_CONFIG) --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system)
udevdir           ?= $(or $(shell $(PKG_CONFIG) --variable=udevdir udev 2>/dev/null),/lib/udev)
udevrulesdir      ?= $(udevdir)/rules.d
dracutmodulesdir  ?= $(or $(shell $(PKG_CONFIG) --variable=dracutmodulesdir dracut 2>/dev/null),/usr/lib/dracut/modules.d)
initramfstoolsdir ?= /usr/share/initramfs-tools

DRACUT_MOD  := initramfs/dracut/91tpm-provision
IRT         := initramfs/initramfs-tools
BOOT_IN     := $(wildcard units/*.in $(DRACUT_MOD)/*.in $(IRT)/hooks/*.in $(IRT)/scripts/*/*.in)
BOOT_GEN    := $(BOOT_IN:%.in=$(BUILD)/gen/%)

.PHONY: boot-files install-boot check-boot

boot-files: $(BOOT_GEN)

$(BUILD)/gen/%: %.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@sbindir@|$(sbindir)|g' -e 's|@sysconfdir@|$(sysconfdir)|g' $< >$@

install: install-boot

install-boot: boot-files
	install -d $(DESTDIR)$(unitdir) $(DESTDIR)$(udevrulesdir) \
		$(DESTDIR)$(dracutmodulesdir)/91tpm-provision $(DESTDIR)$(initramfstoolsdir)/hooks \
		$(DESTDIR)$(initramfstoolsdir)/scripts/init-premount
	install -m 0644 $(BUILD)/gen/units/tpm-provision-tpm.service \
		$(BUILD)/gen/units/tpm-provision-register.service $(DESTDIR)$(unitdir)/
	install -m 0644 udev/60-tpm-provision-tss.rules udev/70-tpm-provision.rules \
		$(DESTDIR)$(udevrulesdir)/
	install -m 0755 $(BUILD)/gen/$(DRACUT_MOD)/module-setup.sh \
		$(BUILD)/gen/$(DRACUT_MOD)/tpm-provision-own.sh $(DESTDIR)$(dracutmodulesdir)/91tpm-provision/
	install -m 0644 $(BUILD)/gen/$(DRACUT_MOD)/tpm-provision-initrd.service \
		$(BUILD)/gen/$(DRACUT_MOD)/tpm-provision-initrd-register.service \
		$(DRACUT_MOD)/70-tpm-provision.rules $(DESTDIR)$(dracutmodulesdir)/91tpm-provision/
	install -m 0755 $(BUILD)/gen/$(IRT)/hooks/tpm-provision $(DESTDIR)$(initramfstoolsdir)/hooks/
	install -m 0755 $(BUILD)/gen/$(IRT)/scripts/init-premount/tpm-provision \
		$(DESTDIR)$(initramfstoolsdir)/scripts/init-premount/

# qemu boots of a Debian 12 kernel and root file system with swtpm and the DPS emulator.
check-boot: all boot-files
	@tests/boot/run.sh

# ---- Packaging: Debian packages, the arm64 cross build and their checks (packaging/) ----
# `make deb` leaves the .debs in build/deb/; `make check-packaging` builds them, lints them,
# installs them into Debian 12 roots and cross builds for arm64 (tests/packaging/run.sh).
.PHONY: deb cross-check-arm64 check-packaging

deb:
	@packaging/build-deb.sh

cross-check-arm64:
	@tests/packaging/cross-arm64.sh

check-packaging:
	@tests/packaging/run.sh
