/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rkvm: the C view of the part of the KVM ABI that /dev/rkvm implements.
 *
 * The numbers are KVM's (include/uapi/linux/kvm.h, API version 12), with an
 * RKVM_ prefix so both headers can be included together; a KVM client needs
 * only <linux/kvm.h>. tests/selftests/system_test.c checks at compile time
 * that every value here equals KVM's.
 */
#ifndef _UAPI_LINUX_RKVM_H
#define _UAPI_LINUX_RKVM_H

#include <linux/ioctl.h>

#define RKVM_API_VERSION 12

#define RKVMIO 0xAE

/* ioctls on /dev/rkvm */
#define RKVM_GET_API_VERSION       _IO(RKVMIO, 0x00)
#define RKVM_CREATE_VM             _IO(RKVMIO, 0x01) /* arg: VM type, 0 only */
#define RKVM_CHECK_EXTENSION       _IO(RKVMIO, 0x03) /* also on a VM fd */
#define RKVM_GET_VCPU_MMAP_SIZE    _IO(RKVMIO, 0x04)

/* VM types */
#define RKVM_X86_DEFAULT_VM 0

/* capabilities that answer non-zero */
#define RKVM_CAP_CHECK_EXTENSION_VM 105

#endif /* _UAPI_LINUX_RKVM_H */
