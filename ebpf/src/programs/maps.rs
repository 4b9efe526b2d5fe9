//! The tables the programs read, in two generations, and how a program picks its generation.
//!
//! Userspace writes a complete new set of tables into the generation the programs are *not*
//! reading, then flips [`ACTIVE_GEN`], then waits for an RCU grace period before it touches
//! the old generation again. A program reads `ACTIVE_GEN` once per packet and uses that
//! generation for every lookup, so an entry it reads is never being written.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
};
use mecgw_ebpf::{
    Candidates, Config, MAX_DST_PREFIXES, MAX_PFCP_TUNNELS, MAX_PFCP_UES, MAX_RULES, MAX_SESSIONS,
    PfcpDownlink, PfcpTunnel, RuleEntry, SessionEntry,
};

/// `BPF_F_NO_PREALLOC`: allocate hash entries on insert rather than all at load.
pub(super) const NO_PREALLOC: u32 = 1;

#[map(name = "ACTIVE_GEN")]
static ACTIVE_GEN: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(2, 0);

#[map(name = "SESSIONS_0")]
static SESSIONS_0: HashMap<u32, SessionEntry> =
    HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
#[map(name = "SESSIONS_1")]
static SESSIONS_1: HashMap<u32, SessionEntry> =
    HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
#[map(name = "UE_V4_0")]
static UE_V4_0: HashMap<[u8; 4], SessionEntry> =
    HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
#[map(name = "UE_V4_1")]
static UE_V4_1: HashMap<[u8; 4], SessionEntry> =
    HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
#[map(name = "UE_V6_0")]
static UE_V6_0: LpmTrie<[u8; 16], SessionEntry> = LpmTrie::with_max_entries(MAX_SESSIONS, 0);
#[map(name = "UE_V6_1")]
static UE_V6_1: LpmTrie<[u8; 16], SessionEntry> = LpmTrie::with_max_entries(MAX_SESSIONS, 0);
#[map(name = "RULES_0")]
static RULES_0: Array<RuleEntry> = Array::with_max_entries(MAX_RULES, 0);
#[map(name = "RULES_1")]
static RULES_1: Array<RuleEntry> = Array::with_max_entries(MAX_RULES, 0);
#[map(name = "DST_V4_0")]
static DST_V4_0: LpmTrie<[u8; 4], Candidates> = LpmTrie::with_max_entries(MAX_DST_PREFIXES, 0);
#[map(name = "DST_V4_1")]
static DST_V4_1: LpmTrie<[u8; 4], Candidates> = LpmTrie::with_max_entries(MAX_DST_PREFIXES, 0);
#[map(name = "DST_V6_0")]
static DST_V6_0: LpmTrie<[u8; 16], Candidates> = LpmTrie::with_max_entries(MAX_DST_PREFIXES, 0);
#[map(name = "DST_V6_1")]
static DST_V6_1: LpmTrie<[u8; 16], Candidates> = LpmTrie::with_max_entries(MAX_DST_PREFIXES, 0);

/// The generation this packet reads, and that generation's config.
#[inline(always)]
pub fn active() -> Option<(u32, &'static Config)> {
    let gen_ptr = ACTIVE_GEN.get_ptr(0)?;
    // SAFETY: the pointer comes from the map lookup and stays valid for the whole program
    // run; a volatile read takes the flip's single 4-byte store as it is.
    let generation = unsafe { core::ptr::read_volatile(gen_ptr) } & 1;
    let config = CONFIG.get(generation)?;
    Some((generation, config))
}

#[inline(always)]
pub fn session_by_teid(generation: u32, teid: u32) -> Option<&'static SessionEntry> {
    // SAFETY: the entry is in the generation being read, which userspace never writes while a
    // program may read it (see the module docs), so the reference stays valid and unchanged.
    unsafe {
        if generation == 0 {
            SESSIONS_0.get(teid)
        } else {
            SESSIONS_1.get(teid)
        }
    }
}

#[inline(always)]
pub fn session_by_ue_v4(generation: u32, addr: [u8; 4]) -> Option<&'static SessionEntry> {
    // SAFETY: as in `session_by_teid`.
    unsafe {
        if generation == 0 {
            UE_V4_0.get(addr)
        } else {
            UE_V4_1.get(addr)
        }
    }
}

#[inline(always)]
pub fn session_by_ue_v6(generation: u32, addr: [u8; 16]) -> Option<&'static SessionEntry> {
    let key = Key::new(128, addr);
    if generation == 0 {
        UE_V6_0.get(&key)
    } else {
        UE_V6_1.get(&key)
    }
}

#[inline(always)]
pub fn candidates_v4(generation: u32, dst: [u8; 4]) -> Option<&'static Candidates> {
    let key = Key::new(32, dst);
    if generation == 0 {
        DST_V4_0.get(&key)
    } else {
        DST_V4_1.get(&key)
    }
}

#[inline(always)]
pub fn candidates_v6(generation: u32, dst: [u8; 16]) -> Option<&'static Candidates> {
    let key = Key::new(128, dst);
    if generation == 0 {
        DST_V6_0.get(&key)
    } else {
        DST_V6_1.get(&key)
    }
}

#[inline(always)]
pub fn rule(generation: u32, index: u32) -> Option<&'static RuleEntry> {
    if generation == 0 {
        RULES_0.get(index)
    } else {
        RULES_1.get(index)
    }
}

// PFCP sessions: one generation, each entry replaced whole (see `pfcp.rs`). Userspace sizes
// them at load (one entry each when PFCP is off).
#[map(name = "PFCP_TUNNELS")]
static PFCP_TUNNELS: HashMap<u32, PfcpTunnel> =
    HashMap::with_max_entries(MAX_PFCP_TUNNELS, NO_PREALLOC);
#[map(name = "PFCP_UE_V4")]
static PFCP_UE_V4: HashMap<[u8; 4], PfcpDownlink> =
    HashMap::with_max_entries(MAX_PFCP_UES, NO_PREALLOC);
#[map(name = "PFCP_UE_V6")]
static PFCP_UE_V6: LpmTrie<[u8; 16], PfcpDownlink> = LpmTrie::with_max_entries(MAX_PFCP_UES, 0);

#[inline(always)]
pub fn pfcp_tunnel(teid: u32) -> Option<&'static PfcpTunnel> {
    // SAFETY: hash map elements are RCU-freed (no preallocation): an element replaced or
    // deleted by userspace stays valid and unchanged until this program run ends.
    unsafe { PFCP_TUNNELS.get(teid) }
}

#[inline(always)]
pub fn pfcp_ue_v4(addr: [u8; 4]) -> Option<&'static PfcpDownlink> {
    // SAFETY: as in `pfcp_tunnel`.
    unsafe { PFCP_UE_V4.get(addr) }
}

#[inline(always)]
pub fn pfcp_ue_v6(addr: [u8; 16]) -> Option<&'static PfcpDownlink> {
    PFCP_UE_V6.get(Key::new(128, addr))
}
