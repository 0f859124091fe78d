// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_IRQFD's kernel half: an eventfd wait-queue entry whose wake-up
 * function injects the interrupt (the eventfd's count is consumed, as
 * KVM's irqfd_wakeup does), and the teardown that must run in process
 * context. Which interrupt and which list the irqfd is on belong to the
 * Rust owner (rust/irq.rs through sys/irqfd.rs).
 *
 * Lifetime: rkvm_irqfd_alloc holds the eventfd's file until
 * rkvm_irqfd_register has polled it, and its context until the shutdown
 * work, which the owner queues (rkvm_irqfd_deactivate) once it took the
 * irqfd off its list: the work unhooks the wait entry (after which no
 * wake-up runs), puts the context, gives the owner its reference back and
 * frees the irqfd.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "irqfd.h"

struct rkvm_irqfd {
	wait_queue_entry_t wait;
	poll_table pt;
	struct eventfd_ctx *ctx;
	/* Held from alloc to register only. */
	struct file *file;
	struct work_struct shutdown;
	const struct rkvm_irqfd_ops *ops;
	void *owner;
	u32 gsi;
	/* The poll callback's result. */
	int ret;
};

/* Every irqfd's shutdown work; flushed by deassign and VM release. */
static struct workqueue_struct *rkvm_irqfd_wq;

int rkvm_irqfd_init(void)
{
	rkvm_irqfd_wq = alloc_workqueue("rkvm-irqfd", WQ_PERCPU, 0);
	return rkvm_irqfd_wq ? 0 : -ENOMEM;
}

void rkvm_irqfd_exit(void)
{
	destroy_workqueue(rkvm_irqfd_wq);
}

static int rkvm_irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode,
			     int sync, void *key)
{
	struct rkvm_irqfd *irqfd = container_of(wait, struct rkvm_irqfd, wait);
	__poll_t flags = key_to_poll(key);
	int ret = 0;

	if (flags & EPOLLIN) {
		u64 cnt;

		eventfd_ctx_do_read(irqfd->ctx, &cnt);
		irqfd->ops->fire(irqfd->owner, irqfd->gsi);
		ret = 1;
	}
	if (flags & EPOLLHUP)
		irqfd->ops->hangup(irqfd->owner, irqfd);
	return ret;
}

static void rkvm_irqfd_ptable(struct file *file, wait_queue_head_t *wqh,
			      poll_table *pt)
{
	struct rkvm_irqfd *irqfd = container_of(pt, struct rkvm_irqfd, pt);

	/* Only one priority waiter: an eventfd feeds one irqfd (EBUSY). */
	irqfd->ret = add_wait_queue_priority_exclusive(wqh, &irqfd->wait);
}

static void rkvm_irqfd_shutdown(struct work_struct *work)
{
	struct rkvm_irqfd *irqfd =
		container_of(work, struct rkvm_irqfd, shutdown);
	u64 cnt;

	eventfd_ctx_remove_wait_queue(irqfd->ctx, &irqfd->wait, &cnt);
	eventfd_ctx_put(irqfd->ctx);
	irqfd->ops->release(irqfd->owner);
	kfree(irqfd);
}

/* EBADF for a closed fd, EINVAL for one that is not an eventfd. */
struct rkvm_irqfd *rkvm_irqfd_alloc(int fd, u32 gsi, void *owner,
				    const struct rkvm_irqfd_ops *ops)
{
	struct rkvm_irqfd *irqfd;
	struct eventfd_ctx *ctx;
	struct file *file;

	file = fget(fd);
	if (!file)
		return ERR_PTR(-EBADF);
	ctx = eventfd_ctx_fileget(file);
	if (IS_ERR(ctx)) {
		fput(file);
		return ERR_CAST(ctx);
	}
	irqfd = kzalloc(sizeof(*irqfd), GFP_KERNEL_ACCOUNT);
	if (!irqfd) {
		eventfd_ctx_put(ctx);
		fput(file);
		return ERR_PTR(-ENOMEM);
	}
	irqfd->ctx = ctx;
	irqfd->file = file;
	irqfd->ops = ops;
	irqfd->owner = owner;
	irqfd->gsi = gsi;
	INIT_WORK(&irqfd->shutdown, rkvm_irqfd_shutdown);
	init_waitqueue_func_entry(&irqfd->wait, rkvm_irqfd_wakeup);
	init_poll_funcptr(&irqfd->pt, rkvm_irqfd_ptable);
	return irqfd;
}

struct eventfd_ctx *rkvm_irqfd_ctx(struct rkvm_irqfd *irqfd)
{
	return irqfd->ctx;
}

/*
 * Hooks the irqfd on its eventfd and drops the file. Returns -EBUSY when
 * the eventfd already feeds an irqfd, else 1 when it was already signalled
 * (the caller injects once, leaving the count, as KVM), else 0.
 */
int rkvm_irqfd_register(struct rkvm_irqfd *irqfd)
{
	__poll_t events = vfs_poll(irqfd->file, &irqfd->pt);

	fput(irqfd->file);
	irqfd->file = NULL;
	if (irqfd->ret)
		return irqfd->ret;
	return (events & EPOLLIN) ? 1 : 0;
}

/* Frees an irqfd that never got hooked (register failed or never ran). */
void rkvm_irqfd_free(struct rkvm_irqfd *irqfd)
{
	if (irqfd->file)
		fput(irqfd->file);
	eventfd_ctx_put(irqfd->ctx);
	kfree(irqfd);
}

void rkvm_irqfd_deactivate(struct rkvm_irqfd *irqfd)
{
	queue_work(rkvm_irqfd_wq, &irqfd->shutdown);
}

void rkvm_irqfd_flush(void)
{
	flush_workqueue(rkvm_irqfd_wq);
}

struct eventfd_ctx *rkvm_irqfd_ctx_fdget(int fd)
{
	return eventfd_ctx_fdget(fd);
}

void rkvm_irqfd_ctx_put(struct eventfd_ctx *ctx)
{
	eventfd_ctx_put(ctx);
}
