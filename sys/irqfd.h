/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of the irqfd helpers in sys/irqfd.c; sys/irqfd.rs declares the
 * same functions.
 */
#ifndef RKVM_SYS_IRQFD_H
#define RKVM_SYS_IRQFD_H

#include <linux/types.h>

struct rkvm_irqfd;
struct eventfd_ctx;

/* What an irqfd calls in its owner (the VM's interrupt state). */
struct rkvm_irqfd_ops {
	/* The eventfd was signalled; atomic context, under its wait-queue lock. */
	void (*fire)(void *owner, u32 gsi);
	/* The eventfd is being released; atomic context, as fire. */
	void (*hangup)(void *owner, struct rkvm_irqfd *irqfd);
	/* The irqfd is gone; drops the owner reference it held. */
	void (*release)(void *owner);
};

int rkvm_irqfd_init(void);
void rkvm_irqfd_exit(void);
struct rkvm_irqfd *rkvm_irqfd_alloc(int fd, u32 gsi, void *owner,
				    const struct rkvm_irqfd_ops *ops);
struct eventfd_ctx *rkvm_irqfd_ctx(struct rkvm_irqfd *irqfd);
int rkvm_irqfd_register(struct rkvm_irqfd *irqfd);
void rkvm_irqfd_free(struct rkvm_irqfd *irqfd);
void rkvm_irqfd_deactivate(struct rkvm_irqfd *irqfd);
void rkvm_irqfd_flush(void);
struct eventfd_ctx *rkvm_irqfd_ctx_fdget(int fd);
void rkvm_irqfd_ctx_put(struct eventfd_ctx *ctx);

#endif
