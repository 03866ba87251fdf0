// SPDX-License-Identifier: MIT OR Apache-2.0
//
// mcvideo-relay kernel fast path: a TC (TCX ingress) classifier that forwards one media leg's
// RTP in the kernel. The relay's worker installs one entry per leg, at the index of the UDP port
// the leg's packets arrive on (the port less the first port of the relay's media range, in
// fp_conf), with the relay's own IPv4 address in the entry; the program forwards a packet only
// when it is aimed at that address and port, is RTP (version 2, payload type outside 64-95),
// comes from the latched source address and port, carries one of the allowed SSRCs and the
// leg's transmitter holds the grant. It then rewrites the IPv4 source and destination and the
// UDP ports, fixes both checksums, counts, and redirects to the egress interface
// (bpf_redirect_neigh) or, for a destination on this host (loopback), passes the rewritten
// packet up (TC_ACT_OK) so the stack delivers it locally.
//
// Port-indexed arrays, not hash maps: the verifier inlines an array lookup into a bounds check
// and an address computation, so a packet costs one cache line of leg and one of counters, both
// addressed from the port and read side by side, where two hash lookups walked buckets and
// elements one after the other (what a thousand legs' worth of cold cache made expensive;
// docs/kernel-fast-path.md has the figures). The arrays are mmapable only for their layout: the
// kernel then puts their values on a page boundary, so an entry is whole cache lines.
//
// Everything else is left alone: TCX_NEXT (TC_ACT_UNSPEC), i.e. the next TCX program if any,
// else the normal stack, and so the relay's socket, which judges it by the userspace rules.
// Packets aimed at a leg but not forwarded are counted there by reason.
//
// Self-contained on purpose (no kernel or libbpf headers): built with `clang -O2 -target bpf`.
// The layouts of fp_conf, fp_leg and fp_counters are mirrored in crates/fastpath/src/lib.rs.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))

// struct __sk_buff up to the last field read here, at the UAPI offsets (data 76, data_end 80,
// gso_segs 164); only data, data_end and gso_segs are read.
struct __sk_buff {
	__u32 len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto;
	__u32 priority, ingress_ifindex, ifindex, tc_index, cb[5], hash, tc_classid;
	__u32 data, data_end, napi_id, family, remote_ip4, local_ip4, remote_ip6[4], local_ip6[4];
	__u32 remote_port, local_port, data_meta;
	__u64 flow_keys, tstamp; // flow_keys: a pointer, 8-byte aligned
	__u32 wire_len, gso_segs;
};

// Helpers by number (include/uapi/linux/bpf.h, __BPF_FUNC_MAPPER).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_l3_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to,
				   __u64 size) = (void *)10;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to,
				   __u64 flags) = (void *)11;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) = (void *)152;
static long (*bpf_clone_redirect)(struct __sk_buff *skb, __u32 ifindex, __u64 flags) = (void *)13;

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_F_MMAPABLE (1U << 10)
#define BPF_F_PSEUDO_HDR 0x10
#define BPF_F_MARK_MANGLED_0 0x20

#define TC_ACT_UNSPEC (-1) // TCX_NEXT: not ours, the next program or the stack decides
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

// Legacy map definitions (section "maps"), read by the loader; no BTF needed.
struct bpf_map_def {
	__u32 type, key_size, value_size, max_entries, map_flags;
};

// Which ports the arrays cover: a leg's entry is the UDP destination port less port_base; its
// counters are fp_stats[entry * ncpus + this CPU] (one entry, index 0).
struct fp_conf {
	__u32 port_base;
	__u32 ncpus;
};

#define FP_GRANTED 1u
#define FP_ACTIVE 2u // the entry holds a leg (an array entry always exists)
#define FP_KEYFRAMES 4u // plain RTP video: count H.264 keyframes (IDR access units)
#define FP_MAX_SSRC 4
#define FP_MAX_FANOUT 64 // copies beyond the leg's own egress (a group's other receivers)
#define LOOPBACK_IFINDEX 1

// One leg, 64 bytes: one cache line. Addresses, ports and SSRCs in network byte order.
struct fp_leg {
	__u32 relay_addr;        // where the leg's packets arrive (the port is the index)
	__u32 src_addr;          // the latched source
	__u16 src_port;
	__u8 n_ssrc;             // 1..=4 SSRCs allowed
	__u8 flags;              // FP_ACTIVE; FP_GRANTED: the arbiter lets the transmitter send;
	                         // FP_KEYFRAMES
	__u32 ssrc[FP_MAX_SSRC];
	__u32 out_addr;          // egress: the relay's source address and port
	__u16 out_port;
	__u16 dst_port;          // egress: the destination
	__u32 dst_addr;
	__u32 ifindex;           // bpf_redirect_neigh to this interface; 0 = local (pass up)
	__u32 clock_rate;        // the stream's RTP clock in Hz, for jitter; 0 = unknown (none)
	__u32 ns_to_ts_q32;      // clock_rate / 1e9 in 32.32 fixed point: ns to timestamp units
	__u32 fan_first;         // fan-out: its first fp_fanout entry
	__u32 fan_n;             // fan-out: copies besides the egress above (0: none)
	__u32 reserved;
};

// One more receiver of a fan-out leg (a group's transmitter), 32 bytes. A copy goes out of
// ifindex with the Ethernet addresses given here (bpf_clone_redirect resolves no neighbour,
// and bpf_fib_lookup, which would, refuses to work where IP forwarding is off, as on a relay),
// or for a receiver on this host (ifindex 0) through lo with lo's zero addresses. An entry with
// dst_addr 0 is skipped: the loader zeroes what a leg does not use, so a leg read half way
// through an update never sends to an address it was not given.
struct fp_out {
	__u32 out_addr;          // the relay's source address and port toward this receiver
	__u16 out_port;
	__u16 dst_port;          // the receiver
	__u32 dst_addr;
	__u32 ifindex;
	__u8 macs[12];           // the next hop's Ethernet address, then the interface's
	__u32 reserved;
};

// Per-leg counters, one copy per CPU (summed by the loader), 128 bytes. What a forwarded packet
// writes comes first, in the first cache line; the pass-up reasons in the second.
struct fp_counters {
	__u64 packets;           // forwarded
	__u64 bytes;             // forwarded UDP payload bytes (RTP header included)
	__u64 frames;            // forwarded with the RTP marker bit (video: a frame's last packet)
	__u64 last_ns;           // bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last one forwarded
	__u64 jitter_q4;         // interarrival jitter (RFC 3550 6.4.1, A.8), timestamp units x 16
	__u32 last_ts;           // the RTP timestamp of the last one forwarded
	__u32 ts_valid;          // last_ts and last_ns are this CPU's previous packet
	__u32 highest_seq;       // highest RTP sequence number forwarded (RFC 1982 order)
	__u32 seq_valid;         // highest_seq is set
	__u64 wrong_source;      // passed up: not from the latched source
	__u64 not_rtp;           // passed up: RTCP, MCV0/1/2, not version 2, too short
	__u64 unknown_ssrc;      // passed up: SSRC not allowed
	__u64 not_granted;       // passed up: the transmitter has no grant
	__u64 errors;            // dropped: a rewrite helper failed
	__u64 keyframes;         // H.264 IDR access units forwarded (FP_KEYFRAMES legs)
	__u32 last_key_ts;       // the leg's last one counted, on any CPU: its RTP timestamp and
	__u32 last_key_ssrc;     // SSRC (kept in the first CPU's entry only)
	__u32 key_valid;         // last_key_ts and last_key_ssrc are set
	__u32 pad;
	__u64 reserved;
};

struct bpf_map_def SEC("maps") fp_conf = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct fp_conf),
	.max_entries = 1,
	.map_flags = 0,
};

struct bpf_map_def SEC("maps") fp_legs = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct fp_leg),
	.max_entries = 4096, // the loader sizes it to the relay's port range
	.map_flags = BPF_F_MMAPABLE,
};

struct bpf_map_def SEC("maps") fp_fanout = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct fp_out),
	.max_entries = 4096, // the loader: blocks of FP_MAX_FANOUT
	.map_flags = 0,
};

struct bpf_map_def SEC("maps") fp_stats = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct fp_counters),
	.max_entries = 4096, // the loader: the port range times the CPUs
	.map_flags = BPF_F_MMAPABLE,
};

struct ethhdr {
	__u8 dst[6], src[6];
	__u16 proto;
} __attribute__((packed));

struct iphdr {
	__u8 ver_ihl, tos;
	__u16 tot_len, id, frag_off;
	__u8 ttl, protocol;
	__u16 check;
	__u32 saddr, daddr;
};

struct udphdr {
	__u16 source, dest, len, check;
};

#define ETH_LEN 14
#define IP_LEN 20 // options: passed up
#define UDP_LEN 8
#define RTP_MIN 12
#define OFF_IP_CSUM (ETH_LEN + 10)
#define OFF_IP_SRC (ETH_LEN + 12)
#define OFF_UDP_CSUM (ETH_LEN + IP_LEN + 6)

#define bswap16(x) __builtin_bswap16(x)
#define bswap32(x) __builtin_bswap32(x)
#define ETH_P_IP_BE 0x0008 // htons(0x0800) on a little-endian host (x86, arm64)

// One's-complement 32-bit add (the kernel's __wsum arithmetic): checksum differences are
// computed here and handed to the csum helpers in their "diff" mode (size 0).
INLINE __u32 csum_add(__u32 a, __u32 b)
{
	a += b;
	return a + (a < b);
}

#define PAYLOAD_MAX 1500 // an RTP header longer than this is not scanned for keyframes
#define NAL_IDR 5

// Whether an H.264 RTP payload (RFC 6184) carries an IDR slice or a part of one, as the relay's
// own scan decides it (src/relay/rules/keyframe.rs): a single NAL unit of type 5, a fragment
// (FU-A, FU-B) of one, or a single-time aggregate (STAP-A, STAP-B) holding one among its first
// four units, each unit whole inside the packet. rtp points at the RTP header, with at least
// RTP_MIN bytes before data_end.
INLINE int h264_idr(__u8 *rtp, void *data_end)
{
	__u32 off = RTP_MIN + (rtp[0] & 0x0f) * 4;
	if (rtp[0] & 0x10) { // a header extension: 4 bytes, then its length in 32-bit words
		if ((void *)(rtp + off + 4) > data_end || off > PAYLOAD_MAX)
			return 0;
		off += 4 + bswap16(*(__u16 *)(rtp + off + 2)) * 4;
	}
	if (off > PAYLOAD_MAX)
		return 0;
	__u8 *pl = rtp + off;
	if ((void *)(pl + 2) > data_end)
		return 0;
	__u8 nal = pl[0] & 0x1f;
	if (nal == NAL_IDR)
		return 1;
	if (nal == 28 || nal == 29)
		return (pl[1] & 0x1f) == NAL_IDR;
	if (nal != 24 && nal != 25)
		return 0;
	__u32 u = nal == 24 ? 1 : 3; // STAP-B has a 16-bit decoding order number first
	for (int i = 0; i < 4; i++) { // a bounded loop: the verifier walks its four turns
		if (u > PAYLOAD_MAX)
			return 0;
		__u8 *unit = pl + u;
		// One pointer, checked once and read through: keeps the compiler from reading
		// through another it derives, whose range the verifier would not know.
		asm volatile("" : "+r"(unit));
		if ((void *)(unit + 3) > data_end)
			return 0;
		__u32 size = ((__u32)unit[0] << 8) | unit[1];
		if (size == 0 || size > PAYLOAD_MAX || (void *)(unit + 2 + size) > data_end)
			return 0; // truncated: what is there is not trusted
		if ((unit[2] & 0x1f) == NAL_IDR)
			return 1;
		u += 2 + size;
	}
	return 0;
}

// Rewrites saddr, daddr (12 bytes from OFF_IP_SRC, contiguous with the UDP ports) and fixes
// both checksums with four helper calls. The UDP checksum covers the addresses through the
// pseudo header (BPF_F_PSEUDO_HDR: also right for CHECKSUM_PARTIAL, where the field holds only
// the pseudo-header sum) and the ports as data (ignored for CHECKSUM_PARTIAL, correctly). A
// zero (absent) UDP checksum stays zero (BPF_F_MARK_MANGLED_0), a computed zero becomes 0xffff.
// With macs (a fan-out copy's), the Ethernet addresses are written too, directly like the
// addresses: no helper call of their own.
INLINE long rewrite(struct __sk_buff *skb, const __u32 old[3], const __u32 new[3],
		    const __u8 *macs)
{
	__u32 addr_diff = csum_add(csum_add(csum_add(~old[0], ~old[1]), new[0]), new[1]);
	__u32 port_diff = csum_add(~old[2], new[2]);
	long err;

	err = bpf_l4_csum_replace(skb, OFF_UDP_CSUM, 0, addr_diff,
				  BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
	if (!err && port_diff != 0xffffffff && port_diff != 0)
		err = bpf_l4_csum_replace(skb, OFF_UDP_CSUM, 0, port_diff, BPF_F_MARK_MANGLED_0);
	if (!err)
		err = bpf_l3_csum_replace(skb, OFF_IP_CSUM, 0, addr_diff, 0);
	if (err)
		return err;
	// The helpers invalidated packet pointers: find the header again, then write directly
	// (the verifier's prologue made the head private when the skb was a clone).
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + OFF_IP_SRC + 12 > data_end)
		return -1;
	// 16-bit stores: offset 26 is only 2-byte aligned.
	__u16 *w = data + OFF_IP_SRC;
	const __u16 *n = (const __u16 *)new;
#pragma unroll
	for (int i = 0; i < 6; i++)
		w[i] = n[i];
	if (macs) {
		// 16-bit stores and loads: the frame starts 2-byte aligned, the entry's macs too.
		__u16 *e = data;
		const __u16 *m = (const __u16 *)macs;
#pragma unroll
		for (int i = 0; i < 6; i++)
			e[i] = m[i];
	}
	return 0;
}

// Sends a copy of the packet, rewritten from cur to the receiver o, out of o's interface (with
// its Ethernet addresses) or, for a receiver on this host, through lo. 0, or an error once the
// packet is half rewritten (then it must not go on).
INLINE long fanout_copy(struct __sk_buff *skb, __u32 cur[3], const struct fp_out *o,
			struct fp_counters *ctr)
{
	__u32 to[3] = {o->out_addr, o->dst_addr, (__u32)o->out_port | ((__u32)o->dst_port << 16)};
	// With the next hop's Ethernet addresses; for lo (a receiver on this host) the zero ones
	// the entry holds, lo's own, or the stack would take the copy for another host.
	long err = rewrite(skb, cur, to, o->macs);
	if (err)
		return err;
	cur[0] = to[0];
	cur[1] = to[1];
	cur[2] = to[2];
	if (bpf_clone_redirect(skb, o->ifindex ? o->ifindex : LOOPBACK_IFINDEX, 0))
		ctr->errors++;
	return 0;
}

SEC("classifier")
int fastpath(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + ETH_LEN + IP_LEN + UDP_LEN + RTP_MIN > data_end)
		return TC_ACT_UNSPEC;
	struct ethhdr *eth = data;
	if (eth->proto != ETH_P_IP_BE)
		return TC_ACT_UNSPEC;
	struct iphdr *ip = data + ETH_LEN;
	// IPv4 without options, UDP, not a fragment (MF clear, offset zero).
	if (ip->ver_ihl != 0x45 || ip->protocol != 17 || (ip->frag_off & bswap16(0x3fff)))
		return TC_ACT_UNSPEC;
	struct udphdr *udp = data + ETH_LEN + IP_LEN;

	__u32 zero = 0;
	struct fp_conf *conf = bpf_map_lookup_elem(&fp_conf, &zero);
	if (!conf)
		return TC_ACT_UNSPEC;
	// Below port_base the index wraps to a large number: past the array's end, no entry.
	__u32 idx = (__u32)bswap16(udp->dest) - conf->port_base;
	struct fp_leg *leg = bpf_map_lookup_elem(&fp_legs, &idx);
	if (!leg)
		return TC_ACT_UNSPEC;
	__u32 cpu = bpf_get_smp_processor_id();
	if (cpu >= conf->ncpus)
		return TC_ACT_UNSPEC; // never forward what cannot be counted
	__u32 cidx = idx * conf->ncpus + cpu;
	struct fp_counters *ctr = bpf_map_lookup_elem(&fp_stats, &cidx);
	if (!ctr)
		return TC_ACT_UNSPEC;
	// Read the counters' line now (volatile: where it stands), so that its cache miss
	// overlaps the leg's below rather than following it.
	__u64 packets = *(volatile __u64 *)&ctr->packets;
	if (!(leg->flags & FP_ACTIVE) || leg->relay_addr != ip->daddr)
		return TC_ACT_UNSPEC; // no leg at this address and port: not ours

	// 1. the latched source, before anything else: a stranger's packets count as such.
	if (ip->saddr != leg->src_addr || udp->source != leg->src_port) {
		ctr->wrong_source++;
		return TC_ACT_UNSPEC;
	}
	// 2. one RTP datagram only: version 2; payload types 64-95 are RTCP on a muxed port
	//    (RFC 5761), MCV0/1/2 transmission control is RTCP APP: userspace. A GSO batch (a
	//    sender's UDP_SEGMENT send, kept whole on lo and veth) holds several datagrams of which
	//    only the first is in view here: userspace, which receives them one by one.
	__u8 *rtp = data + ETH_LEN + IP_LEN + UDP_LEN;
	__u16 udp_len = bswap16(udp->len);
	__u8 pt = rtp[1] & 0x7f;
	if ((rtp[0] & 0xc0) != 0x80 || (pt >= 64 && pt <= 95) || udp_len < UDP_LEN + RTP_MIN ||
	    skb->gso_segs > 1) {
		ctr->not_rtp++;
		return TC_ACT_UNSPEC;
	}
	// 3. an allowed SSRC
	__u32 ssrc = *(__u32 *)(rtp + 8);
	int allowed = 0;
#pragma unroll
	for (int i = 0; i < FP_MAX_SSRC; i++) {
		if (i < leg->n_ssrc && leg->ssrc[i] == ssrc)
			allowed = 1;
	}
	if (!allowed) {
		ctr->unknown_ssrc++;
		return TC_ACT_UNSPEC;
	}
	// 4. the grant
	if (!(leg->flags & FP_GRANTED)) {
		ctr->not_granted++;
		return TC_ACT_UNSPEC;
	}
	__u32 fan_n = leg->fan_n; // a fan-out leg (a group's transmitter): more receivers
	__u32 fan_first = leg->fan_first;

	__u16 seq = bswap16(*(__u16 *)(rtp + 2));
	__u32 ts = bswap32(*(__u32 *)(rtp + 4));
	__u8 marker = rtp[1] >> 7;
	__u32 ns_to_ts = leg->ns_to_ts_q32;
	// saddr, daddr, sport|dport as they lie in the packet, and what replaces them.
	__u32 old[3] = {ip->saddr, ip->daddr, *(__u32 *)udp};
	__u32 new[3] = {leg->out_addr, leg->dst_addr,
			(__u32)leg->out_port | ((__u32)leg->dst_port << 16)};
	__u32 ifindex = leg->ifindex;
	// Before the rewrite: its helpers invalidate the packet pointers.
	int idr = (leg->flags & FP_KEYFRAMES) && h264_idr(rtp, data_end);

	// Packet pointers are invalid after the first helper that writes. A fan-out leg's other
	// receivers first, each a clone of the packet as rewritten for it, then its own egress.
	for (int i = 0; fan_n && i < FP_MAX_FANOUT; i++) {
		if (i >= fan_n)
			break;
		__u32 k = fan_first + i;
		struct fp_out *o = bpf_map_lookup_elem(&fp_fanout, &k);
		if (!o)
			break;
		if (!o->dst_addr)
			continue;
		if (fanout_copy(skb, old, o, ctr)) {
			ctr->errors++;
			return TC_ACT_SHOT; // half rewritten: never let it reach anyone
		}
	}
	if (rewrite(skb, old, new, 0)) {
		ctr->errors++;
		return TC_ACT_SHOT;
	}

	ctr->packets = packets + 1;
	ctr->bytes += udp_len - UDP_LEN;
	ctr->frames += marker;
	__u64 now = bpf_ktime_get_ns();
	// Interarrival jitter as the relay's own meter keeps it: D is the difference between two
	// packets' spacing on arrival and in their timestamps, both in timestamp units;
	// J += (|D| - J) / 16, kept times 16. Per CPU: a CPU's first packet only sets its marks.
	// The arrival spacing in timestamp units by a multiplication (the loader's 32.32 factor),
	// not a 64-bit division; a gap over 2^40 ns (18 minutes) starts afresh.
	__u64 gap = now - ctr->last_ns;
	if (ns_to_ts && ctr->ts_valid && now > ctr->last_ns && gap < (1ull << 40)) {
		__s64 arrival = (__s64)((gap * ns_to_ts) >> 32);
		__s64 d = arrival - (__s64)(__s32)(ts - ctr->last_ts);
		if (d < 0)
			d = -d;
		ctr->jitter_q4 = ctr->jitter_q4 + (__u64)d - ((ctr->jitter_q4 + 8) >> 4);
	}
	ctr->last_ts = ts;
	ctr->ts_valid = 1;
	ctr->last_ns = now;
	if (!ctr->seq_valid || (short)(seq - (__u16)ctr->highest_seq) > 0) {
		ctr->highest_seq = seq;
		ctr->seq_valid = 1;
	}
	// A keyframe once, however many of its packets carry IDR slices: its access unit is one
	// (SSRC, timestamp). The count is per CPU, the mark of the last one counted is the leg's,
	// in its first CPU's entry, so an access unit whose packets arrive on two CPUs is still
	// one keyframe. Only IDR packets (a few per second) read or write that shared line.
	if (idr) {
		__u32 midx = idx * conf->ncpus;
		struct fp_counters *mark = cpu == 0 ? ctr : bpf_map_lookup_elem(&fp_stats, &midx);
		if (mark && !(mark->key_valid && mark->last_key_ts == ts && mark->last_key_ssrc == ssrc)) {
			ctr->keyframes++;
			mark->last_key_ts = ts;
			mark->last_key_ssrc = ssrc;
			mark->key_valid = 1;
		}
	}

	if (ifindex)
		return bpf_redirect_neigh(ifindex, 0, 0, 0);
	return TC_ACT_OK; // a local destination: the stack delivers the rewritten packet
}

char _license[] SEC("license") = "Dual MIT/GPL";
