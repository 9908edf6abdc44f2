SUMMARY = "TPM 2.0 device provisioning for Azure IoT DPS at boot"
DESCRIPTION = "tpm-provision gives a device with a TPM 2.0 its Azure IoT identity on its first \
boot in the field: it takes ownership of the TPM when nobody has, registers with the Azure IoT \
Hub Device Provisioning Service by TPM attestation and keeps the returned key in the TPM."
SECTION = "admin"
# Every source file carries "SPDX-License-Identifier: MIT"; the tree has no license file yet.
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://agent/main.c;beginline=1;endline=1;md5=234d7d4edd08962c0144e4604050e0b6"

# The layer is part of the source tree, and the recipe builds that tree. A layer kept apart from
# the sources would set SRC_URI to the project's git repository and SRCREV instead of these.
inherit externalsrc
EXTERNALSRC ?= "${TPM_PROVISION_LAYERDIR}/../.."
EXTERNALSRC_BUILD ?= "${WORKDIR}/build"
# externalsrc would otherwise put oe-workdir and oe-logs links into the source tree.
EXTERNALSRC_SYMLINKS = ""

inherit pkgconfig systemd useradd features_check

# libsystemd (sd_notify, the journal) and the units need systemd as the init system.
REQUIRED_DISTRO_FEATURES = "systemd"

DEPENDS = "tpm2-tss openssl curl json-c systemd"

# The Makefile builds in ${B} (BUILD=), takes CC, CFLAGS, CPPFLAGS, LDFLAGS and PKG_CONFIG from
# the environment, and gets every install directory from here rather than from pkg-config.
# The same directories go to compile and install: the units and scripts are made from .in
# templates with @sbindir@ and @sysconfdir@ filled in at build time.
TPM_PROVISION_DIRS = "prefix=${prefix} sbindir=${sbindir} sysconfdir=${sysconfdir} \
    unitdir=${systemd_system_unitdir} udevrulesdir=${nonarch_base_libdir}/udev/rules.d \
    dracutmodulesdir=${nonarch_libdir}/dracut/modules.d \
    initramfstoolsdir=${datadir}/initramfs-tools"
EXTRA_OEMAKE = "-C ${S} BUILD=${B} ${TPM_PROVISION_DIRS}"

do_compile() {
    oe_runmake all boot-files
}

do_install() {
    # The install directories come with EXTRA_OEMAKE, as for do_compile.
    oe_runmake install DESTDIR=${D}

    # Yocto has no initramfs-tools; its initramfs-framework gets the module below instead.
    rm -rf ${D}${datadir}/initramfs-tools

    install -d ${D}${sysconfdir}/tpm-provision
    install -m 0644 ${S}/packaging/tpm-provision.conf ${D}${sysconfdir}/tpm-provision/

    install -d ${D}${mandir}/man5 ${D}${mandir}/man8
    install -m 0644 ${S}/docs/tpm-provision.conf.5 ${D}${mandir}/man5/
    install -m 0644 ${S}/docs/tpm-provision.8 ${D}${mandir}/man8/

    install -d ${D}/init.d
    sed -e 's|@sbindir@|${sbindir}|g' ${S}/initramfs/initramfs-framework/tpm_provision.in \
        >${D}/init.d/85-tpm_provision
    chmod 0755 ${D}/init.d/85-tpm_provision
}

# The units run with SupplementaryGroups=tss, and the 60-tpm-provision-tss.rules give that group
# /dev/tpmrm*. meta-tpm's tpm2-tss package creates the group too; a second groupadd of an
# existing group is skipped, so the image need not install tpm2-tss's own rules.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system tss"

# udev pulls both units when a /dev/tpmrm* node appears (70-tpm-provision.rules). They have no
# [Install] section: "enable" would have nothing to enable, and a WantedBy= would make machines
# without a TPM 2.0 wait for one. "disable" only writes a preset that changes nothing; listing
# the units still packages them and stops them when the package is removed.
SYSTEMD_SERVICE:${PN} = "tpm-provision-tpm.service tpm-provision-register.service"
SYSTEMD_AUTO_ENABLE = "disable"

PACKAGES =+ "initramfs-module-tpm-provision ${PN}-dracut"

FILES:${PN} += "${systemd_system_unitdir} ${nonarch_base_libdir}/udev/rules.d"
CONFFILES:${PN} = "${sysconfdir}/tpm-provision/tpm-provision.conf"
# The TCTI loader dlopen()s libtss2-tcti-device.so.0 at run time, so no shared library
# dependency names it (boot-integration.md 3.3).
RDEPENDS:${PN} += "libtss2-tcti-device"
# The agent dlopen()s libcurl.so.4 when it is about to talk to DPS (agent/dps/curl-api.h), so
# no shared library dependency names that either.
RDEPENDS:${PN} += "libcurl"
# CA certificates verify DPS's TLS certificate unless CABundle= names a bundle of its own.
RRECOMMENDS:${PN} += "ca-certificates"

SUMMARY:initramfs-module-tpm-provision = "initramfs-framework module: prepare the TPM with tpm-provision"
FILES:initramfs-module-tpm-provision = "/init.d/85-tpm_provision"
RDEPENDS:initramfs-module-tpm-provision = "initramfs-framework-base ${PN}"

SUMMARY:${PN}-dracut = "dracut module for tpm-provision"
FILES:${PN}-dracut = "${nonarch_libdir}/dracut/modules.d/91tpm-provision"
# module-setup.sh is a bash script that dracut sources.
RDEPENDS:${PN}-dracut = "${PN} dracut bash"
