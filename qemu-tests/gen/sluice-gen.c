/*
 * sluice-gen: the fast-path bench's traffic generator, a DPDK program on
 * two vhost-user ports (net_vhost0 = the forwarder's lan NIC, net_vhost1 =
 * its wan NIC).
 *
 * Why not testpmd's flowgen: DPDK 22.11's flowgen varies only the
 * destination address (so a load balancer's VIP or a NAT's many inside
 * hosts cannot be driven) and sends flat out (so no lossless rate can be
 * searched). This program:
 *
 *  - sends 64-byte UDP frames on port 0 at a set rate (TSC-paced bursts of
 *    32; rate 0 = as fast as the ring takes them), N flows: flow i comes
 *    from host SRC + i % HOSTS, port SPORT + i / HOSTS, to DST:DPORT;
 *  - reflects what arrives on port 1 (the "server" behind the forwarder:
 *    MACs, IPv4 addresses and UDP ports swapped), so a NAT or a load
 *    balancer sees request and reply as real traffic does;
 *  - counts what comes back on port 0;
 *  - answers every ARP request on either port with that port's MAC (the
 *    forwarder resolves the hosts it sends to, as on a real segment).
 *
 * Where loss happens is counted: `refused` are frames port 0's vhost
 * enqueue did not take (the forwarder's lan receive ring full),
 * `reflect_refused` the same on port 1 (its wan receive ring full).
 *
 * stdin takes commands, stdout answers one line each:
 *   run RATE SECONDS DRAIN_MS   -> "result sent=… refused=… received=…
 *                                   rx1=… reflected=… reflect_refused=…
 *                                   arp=… ns=…" (rx1: UDP frames that
 *                                   reached the server side; ns: the
 *                                   sending time)
 *   quit
 * It prints "gen ready" once both ports are started.
 *
 * Options after EAL's `--`: --flows N --hosts H --src A.B.C.D
 * --sport P --dst A.B.C.D --dport P --mac0 M --mac1 M --dut-mac M
 * (mac0/mac1: the generator's own MAC on port 0/1; dut-mac: the
 * destination MAC of what port 0 sends).
 *
 * Built by sluice-fastpath with `cc $(pkg-config --cflags --libs libdpdk)`
 * (Debian's libdpdk-dev); run with --no-pci like every DPDK process the
 * project starts.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#define BURST 32
#define FRAME 64

enum { G_IDLE, G_RUN_REQ, G_RUNNING, G_DRAINING, G_DONE, G_QUIT };

struct counters {
	uint64_t sent, refused, received, rx1, reflected, reflect_refused, arp;
};

static struct {
	uint32_t flows, hosts;
	uint32_t src, dst; /* host order */
	uint16_t sport, dport;
	struct rte_ether_addr mac[2], dut;
} cfg = {
	.flows = 1, .hosts = 250,
	.src = RTE_IPV4(10, 254, 0, 2), .dst = RTE_IPV4(10, 1, 0, 2),
	.sport = 1024, .dport = 1001,
};

/* The command shared between the main lcore (stdin) and the worker. */
static volatile int state = G_IDLE;
static volatile uint64_t req_rate, req_secs, req_drain_ms;
static struct counters result;
static uint64_t result_ns;

static struct rte_mempool *pool;

/* ARP replies waiting for room in a port's ring: sent before anything
 * else (a host answers ARP however busy its sender is; a reply lost to a
 * full ring would make the forwarder hold its traffic down). */
#define ARPQ 64
static struct rte_mbuf *arpq[2][ARPQ];
static uint16_t arpn[2];

static void arp_queue(uint16_t port, struct rte_mbuf *m)
{
	if (arpn[port] == ARPQ)
		rte_pktmbuf_free(m);
	else
		arpq[port][arpn[port]++] = m;
}

static void arp_flush(uint16_t port)
{
	if (!arpn[port])
		return;
	uint16_t n = rte_eth_tx_burst(port, 0, arpq[port], arpn[port]);
	memmove(arpq[port], arpq[port] + n, (arpn[port] - n) * sizeof(arpq[port][0]));
	arpn[port] -= n;
}

static void die(const char *what)
{
	fprintf(stderr, "sluice-gen: %s\n", what);
	exit(2);
}

static int parse_mac(const char *s, struct rte_ether_addr *m)
{
	unsigned b[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (b[i] > 255)
			return -1;
		m->addr_bytes[i] = (uint8_t)b[i];
	}
	return 0;
}

static int parse_ip(const char *s, uint32_t *ip)
{
	unsigned a, b, c, d;
	if (sscanf(s, "%u.%u.%u.%u", &a, &b, &c, &d) != 4 || a > 255 || b > 255 || c > 255 || d > 255)
		return -1;
	*ip = RTE_IPV4(a, b, c, d);
	return 0;
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *k = argv[i];
		if (i + 1 >= argc)
			die("an option without its value");
		const char *v = argv[++i];
		unsigned long n = strtoul(v, NULL, 10);
		if (!strcmp(k, "--flows")) {
			if (n < 1 || n > (1u << 24))
				die("--flows: 1 to 16777216");
			cfg.flows = (uint32_t)n;
		} else if (!strcmp(k, "--hosts")) {
			if (n < 1 || n > 65536)
				die("--hosts: 1 to 65536");
			cfg.hosts = (uint32_t)n;
		} else if (!strcmp(k, "--sport") || !strcmp(k, "--dport")) {
			if (n < 1 || n > 65535)
				die("a port: 1 to 65535");
			*(k[2] == 's' ? &cfg.sport : &cfg.dport) = (uint16_t)n;
		} else if (!strcmp(k, "--src") || !strcmp(k, "--dst")) {
			if (parse_ip(v, k[2] == 's' ? &cfg.src : &cfg.dst))
				die("an IPv4 address: A.B.C.D");
		} else if (!strcmp(k, "--mac0") || !strcmp(k, "--mac1") || !strcmp(k, "--dut-mac")) {
			struct rte_ether_addr *m = !strcmp(k, "--mac0") ? &cfg.mac[0] : !strcmp(k, "--mac1") ? &cfg.mac[1] : &cfg.dut;
			if (parse_mac(v, m))
				die("a MAC: xx:xx:xx:xx:xx:xx");
		} else {
			die("unknown option");
		}
	}
	/* Every flow's source port must fit in 16 bits. */
	uint64_t per_host = (cfg.flows + cfg.hosts - 1) / cfg.hosts;
	if (cfg.sport + per_host - 1 > 65535)
		die("--flows / --hosts source ports do not fit above --sport");
}

static void port_start(uint16_t port)
{
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	if (rte_eth_dev_configure(port, 1, 1, &conf) < 0)
		die("configure");
	if (rte_eth_rx_queue_setup(port, 0, 1024, rte_eth_dev_socket_id(port), NULL, pool) < 0)
		die("rx queue");
	if (rte_eth_tx_queue_setup(port, 0, 1024, rte_eth_dev_socket_id(port), NULL) < 0)
		die("tx queue");
	if (rte_eth_dev_start(port) < 0)
		die("start");
}

/* Frame of flow `i` into `m`. */
static void fill(struct rte_mbuf *m, uint32_t i)
{
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)p;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	memset(p, 0, FRAME);
	rte_ether_addr_copy(&cfg.dut, &eth->dst_addr);
	rte_ether_addr_copy(&cfg.mac[0], &eth->src_addr);
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16(FRAME - sizeof(*eth));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(cfg.src + i % cfg.hosts);
	ip->dst_addr = rte_cpu_to_be_32(cfg.dst);
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	udp->src_port = rte_cpu_to_be_16((uint16_t)(cfg.sport + i / cfg.hosts));
	udp->dst_port = rte_cpu_to_be_16(cfg.dport);
	udp->dgram_len = rte_cpu_to_be_16(FRAME - sizeof(*eth) - sizeof(*ip));
	m->data_len = m->pkt_len = FRAME;
}

/* An ARP request turned into the reply from `port`'s MAC; 0 if `m` is not one. */
static int arp_reply(struct rte_mbuf *m, uint16_t port)
{
	if (m->data_len < sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr))
		return 0;
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
		return 0;
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eth + 1);
	if (arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST))
		return 0;
	struct rte_arp_ipv4 *a = &arp->arp_data;
	uint32_t asked = a->arp_tip;
	rte_ether_addr_copy(&eth->src_addr, &eth->dst_addr);
	rte_ether_addr_copy(&cfg.mac[port], &eth->src_addr);
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
	rte_ether_addr_copy(&a->arp_sha, &a->arp_tha);
	a->arp_tip = a->arp_sip;
	rte_ether_addr_copy(&cfg.mac[port], &a->arp_sha);
	a->arp_sip = asked;
	return 1;
}

/* An IPv4/UDP frame turned back to its sender; 0 if `m` is not one. */
static int reflect(struct rte_mbuf *m)
{
	if (m->data_len < sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr))
		return 0;
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
		return 0;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	if (ip->version_ihl != RTE_IPV4_VHL_DEF || ip->next_proto_id != IPPROTO_UDP)
		return 0;
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	struct rte_ether_addr e = eth->src_addr;
	eth->src_addr = eth->dst_addr;
	eth->dst_addr = e;
	uint32_t a = ip->src_addr;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = a; /* the header checksum does not change */
	uint16_t p = udp->src_port;
	udp->src_port = udp->dst_port;
	udp->dst_port = p; /* nor does the UDP checksum */
	return 1;
}

static int worker(void *arg)
{
	(void)arg;
	const uint64_t hz = rte_get_tsc_hz();
	struct counters c;
	memset(&c, 0, sizeof(c));
	uint32_t flow = 0;
	double next = 0, per_burst = 0;
	uint64_t start = 0, end = 0, drain_end = 0;
	struct rte_mbuf *tx[BURST], *rx[BURST], *back[BURST];

	for (;;) {
		int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
		uint64_t now = rte_rdtsc();
		if (s == G_QUIT)
			return 0;
		if (s == G_RUN_REQ) {
			memset(&c, 0, sizeof(c));
			start = now;
			end = now + req_secs * hz;
			next = (double)now;
			per_burst = req_rate ? (double)hz * BURST / (double)req_rate : 0;
			__atomic_store_n(&state, G_RUNNING, __ATOMIC_RELEASE);
			s = G_RUNNING;
		}
		arp_flush(0);
		arp_flush(1);
		if (s == G_RUNNING) {
			if (now >= end) {
				drain_end = now + req_drain_ms * hz / 1000;
				__atomic_store_n(&state, G_DRAINING, __ATOMIC_RELEASE);
				s = G_DRAINING;
			} else if (per_burst == 0 || (double)now >= next) {
				if (per_burst != 0) {
					next += per_burst;
					/* Behind by more than 4 bursts (the generator was
					 * descheduled): do not make up for it in one go. */
					if ((double)now > next + 4 * per_burst)
						next = (double)now;
				}
				if (rte_pktmbuf_alloc_bulk(pool, tx, BURST) == 0) {
					for (int k = 0; k < BURST; k++) {
						fill(tx[k], flow);
						flow = flow + 1 == cfg.flows ? 0 : flow + 1;
					}
					uint16_t n = rte_eth_tx_burst(0, 0, tx, BURST);
					c.sent += n;
					c.refused += BURST - n;
					if (n < BURST)
						rte_pktmbuf_free_bulk(&tx[n], BURST - n);
				}
			}
		}
		if (s == G_DRAINING && now >= drain_end) {
			result = c;
			/* In floating point: cycles x 1e9 overflows 64 bits past ~6 s. */
			result_ns = (uint64_t)((double)(end - start) * 1e9 / (double)hz);
			__atomic_store_n(&state, G_DONE, __ATOMIC_RELEASE);
		}

		/* Port 0: what came back (counted), ARP answered. */
		uint16_t nb = rte_eth_rx_burst(0, 0, rx, BURST);
		for (uint16_t k = 0; k < nb; k++) {
			if (arp_reply(rx[k], 0)) {
				c.arp++;
				arp_queue(0, rx[k]);
			} else {
				if (s == G_RUNNING || s == G_DRAINING)
					c.received++;
				rte_pktmbuf_free(rx[k]);
			}
		}

		/* Port 1: the server side, everything sent back. */
		nb = rte_eth_rx_burst(1, 0, rx, BURST);
		uint16_t nback = 0;
		for (uint16_t k = 0; k < nb; k++) {
			if (arp_reply(rx[k], 1)) {
				c.arp++;
				arp_queue(1, rx[k]);
			} else if (reflect(rx[k])) {
				if (s == G_RUNNING || s == G_DRAINING)
					c.rx1++;
				back[nback++] = rx[k];
			} else {
				rte_pktmbuf_free(rx[k]);
			}
		}
		if (nback) {
			uint16_t n = rte_eth_tx_burst(1, 0, back, nback);
			c.reflected += n;
			c.reflect_refused += nback - n;
			if (n < nback)
				rte_pktmbuf_free_bulk(&back[n], nback - n);
		}
	}
}

int main(int argc, char **argv)
{
	/* DPDK probes PCI devices by default, and on a test machine that is
	 * its own network card: never without --no-pci. */
	int no_pci = 0;
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		no_pci |= !strcmp(argv[i], "--no-pci");
	if (!no_pci)
		die("refusing to start without --no-pci (DPDK would probe this machine's own NIC)");
	int used = rte_eal_init(argc, argv);
	if (used < 0)
		die("EAL init");
	parse_args(argc - used, argv + used);
	if (rte_eth_dev_count_avail() != 2)
		die("needs exactly two ports (--vdev net_vhost0,… --vdev net_vhost1,…)");
	pool = rte_pktmbuf_pool_create("gen", 16383, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	if (!pool)
		die("mbuf pool");
	port_start(0);
	port_start(1);
	unsigned lcore = rte_get_next_lcore(-1, 1, 0);
	if (lcore >= RTE_MAX_LCORE)
		die("needs a second lcore (--lcores 0@N,1@N)");
	rte_eal_remote_launch(worker, NULL, lcore);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("gen ready flows=%" PRIu32 " hosts=%" PRIu32 "\n", cfg.flows, cfg.hosts);

	char line[256];
	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long rate, secs, drain;
		if (!strncmp(line, "quit", 4))
			break;
		if (sscanf(line, "run %llu %llu %llu", &rate, &secs, &drain) != 3 || secs < 1 || secs > 3600 || drain > 10000) {
			printf("error: expected run RATE SECONDS DRAIN_MS\n");
			continue;
		}
		req_rate = rate;
		req_secs = secs;
		req_drain_ms = drain;
		__atomic_store_n(&state, G_RUN_REQ, __ATOMIC_RELEASE);
		while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != G_DONE)
			usleep(1000);
		printf("result sent=%" PRIu64 " refused=%" PRIu64 " received=%" PRIu64 " rx1=%" PRIu64 " reflected=%" PRIu64
		       " reflect_refused=%" PRIu64 " arp=%" PRIu64 " ns=%" PRIu64 "\n",
		       result.sent, result.refused, result.received, result.rx1, result.reflected, result.reflect_refused,
		       result.arp, result_ns);
		__atomic_store_n(&state, G_IDLE, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&state, G_QUIT, __ATOMIC_RELEASE);
	rte_eal_mp_wait_lcore();
	rte_eth_dev_stop(0);
	rte_eth_dev_stop(1);
	rte_eal_cleanup();
	return 0;
}
