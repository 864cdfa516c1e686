// The restoring wrapper of `cargo xtask bench --part xdp`'s warm loop (this file is Sluice's own,
// built by the bench with clang; it contains no code of any load balancer).
//
// BPF_PROG_TEST_RUN with repeat = N runs a program N times on one buffer without restoring it,
// so a program that rewrites or encapsulates the frame would see its own output from the second
// run on. This wrapper calls the program under test as a global function, then puts the frame
// back: the headroom the body took or gave, and the first SAVED bytes (Ethernet, IPv6 and TCP
// headers, all a load balancer rewrites). Built two ways:
// - alone, with an empty body: the wrapper's own cost, measured and subtracted;
// - with -DWRAP_KATRAN and -DPROG_SEC_NAME='".text"', including Katran's balancer.bpf.c from
//   the tree the user names, so its entry point becomes a plain function this wrapper calls.

#ifdef WRAP_KATRAN
#include "katran/lib/bpf/balancer.bpf.c"
#define BODY balancer_ingress
#else
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

// The kernel's context of an XDP program (uapi struct xdp_md).
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#define SEC(name) __attribute__((section(name), used))
#define XDP_ABORTED 0
#define XDP_PASS 2

static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)44;

// A global function like Katran's entry point once wrapped, so both are called the same way.
// The empty asm stops clang from seeing that the frame stays as it was and dropping the
// restore, which would make the wrapper's measured cost smaller than its real one.
__attribute__((noinline)) int empty_body(struct xdp_md *ctx)
{
	asm volatile("" ::: "memory");
	return ctx ? XDP_PASS : XDP_ABORTED;
}
#define BODY empty_body
#endif

// 14 (Ethernet) + 40 (IPv6) + 20 (TCP): every header of every frame the bench sends. Every
// frame is at least this long (the shortest, IPv4 UDP with its payload, is exactly 74). Copied
// as 9 words and a half-word (the verifier allows unaligned packet access on x86-64).
#define SAVED 74
#define WORDS 9

SEC("xdp")
int restore_wrapper(struct xdp_md *ctx)
{
	__u64 saved[WORDS];
	__u16 tail;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + SAVED > end)
		return XDP_ABORTED;
	int len = end - data;
#pragma unroll
	for (int i = 0; i < WORDS; i++)
		saved[i] = ((__u64 *)data)[i];
	tail = *(__u16 *)(data + WORDS * 8);

	int verdict = BODY(ctx);

	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	int grown = (int)(end - data) - len;
	if (grown != 0 && bpf_xdp_adjust_head(ctx, grown) != 0)
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + SAVED > end)
		return XDP_ABORTED;
#pragma unroll
	for (int i = 0; i < WORDS; i++)
		((__u64 *)data)[i] = saved[i];
	*(__u16 *)(data + WORDS * 8) = tail;
	return verdict;
}

#ifndef WRAP_KATRAN
char _license[] SEC("license") = "Dual MIT/GPL";
#endif
