//! The dataplane as a whole: its programs and maps as the kernel reports them, program upgrades,
//! reset, the configuration generation it records, and RCU grace periods.

use aya::maps::MapInfo;
use dataplane_common::{globals::GENERATION, maps as names, programs};

use super::{DataplaneError, KernelDataplane, PinHealth, PinRepair};

/// A loaded program as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    pub name: String,
    pub kind: &'static str,
    pub kernel_id: u32,
    pub tag: u64,
}

/// A map as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapStatus {
    pub name: &'static str,
    pub kind: String,
    pub kernel_id: u32,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// Keys present, for maps where the kernel can enumerate them (hashes); `None` for arrays,
    /// whose occupancy only the domain knows (slots allocated).
    pub keys: Option<u64>,
    pub pin_path: String,
}

/// The kernel side of the dataplane's lifecycle and status.
pub trait Lifecycle {
    /// Loads `object` (the running build's when `None`) over the same maps, verifies it, and
    /// switches every interface to its programs with atomic link updates. A failure changes
    /// nothing. Returns the programs now attached.
    fn upgrade(&self, object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError>;
    /// Detaches everything and removes every pin.
    fn reset(&self);
    /// What tells these pins from any others: the kernel id of the pinned `GLOBALS` map (ids are
    /// never reused while the machine runs, and pins do not outlive it). A state file records it
    /// and is taken as this dataplane's only when it matches.
    fn pins_id(&self) -> Result<u64, DataplaneError>;

    /// Fingerprint of the object the attached programs came from (`None` where there is none).
    fn programs_object(&self) -> Option<u64>;

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError>;

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError>;

    /// The bpffs directory the maps are pinned under.
    fn pin_root(&self) -> String;

    /// Records the configuration generation in the kernel (`globals::GENERATION`).
    fn set_generation(&self, generation: u64) -> Result<(), DataplaneError>;
    /// The generation last recorded there (0 on a fresh dataplane).
    fn generation(&self) -> Result<u64, DataplaneError>;
    /// Waits until every program run that started before the call has finished (an RCU grace
    /// period), so that what they could see may be reused.
    fn wait_for_readers(&self) -> Result<(), DataplaneError>;

    /// Checks that every map pin still names the map the server writes (and the programs read),
    /// pinning that map again where the pin was removed or replaced. Returns this call's
    /// repairs; nothing after a reset.
    fn check_pins(&self) -> Result<Vec<PinRepair>, DataplaneError>;
    /// The pin repairs since the start (at start and by `check_pins`) and their count.
    fn pin_health(&self) -> PinHealth;
}

impl Lifecycle for KernelDataplane {
    fn upgrade(&self, object: Option<&[u8]>) -> Result<Vec<ProgramStatus>, DataplaneError> {
        self.upgrade_programs(object)
    }

    fn reset(&self) {
        self.reset_all()
    }

    fn pins_id(&self) -> Result<u64, DataplaneError> {
        let path = self.dirs.maps.join(names::GLOBALS);
        Ok(u64::from(MapInfo::from_pin(&path).map_err(DataplaneError::map(names::GLOBALS, "info"))?.id()))
    }

    fn programs_object(&self) -> Option<u64> {
        Some(KernelDataplane::programs_object(self))
    }

    fn programs(&self) -> Result<Vec<ProgramStatus>, DataplaneError> {
        let inner = self.lock();
        let xdp = inner.xdp.info().map_err(DataplaneError::program(programs::XDP_INGRESS, "info"))?;
        let tc = inner.tc.info().map_err(DataplaneError::program(programs::TC_EGRESS, "info"))?;
        Ok(vec![
            ProgramStatus { name: programs::XDP_INGRESS.to_owned(), kind: "xdp", kernel_id: xdp.id(), tag: xdp.tag() },
            ProgramStatus {
                name: programs::TC_EGRESS.to_owned(),
                kind: "sched_cls",
                kernel_id: tc.id(),
                tag: tc.tag(),
            },
        ])
    }

    fn maps(&self) -> Result<Vec<MapStatus>, DataplaneError> {
        let inner = self.lock();
        let open = self.pin_watch().open_ids();
        let mut out = Vec::new();
        for (name, id) in open {
            let path = self.dirs.maps.join(name);
            // By id, not by pin: the status must answer while a damaged pin waits for the
            // periodic check, and report the map the server writes, whatever the pin names.
            let info = MapInfo::from_id(id).map_err(DataplaneError::map(name, "info"))?;
            let kind = info.map_type().map(|t| map_type_name(t).to_owned()).unwrap_or_else(|_| "unknown".to_owned());
            let keys = match name {
                names::INTERFACES => Some(inner.interfaces.count_direct()),
                names::INTERFACES_HIGH => Some(inner.interfaces.count_high()),
                _ => None,
            };
            out.push(MapStatus {
                name,
                kind,
                kernel_id: info.id(),
                max_entries: info.max_entries(),
                key_size: info.key_size(),
                value_size: info.value_size(),
                keys,
                pin_path: path.display().to_string(),
            });
        }
        Ok(out)
    }

    fn pin_root(&self) -> String {
        self.dirs.root.display().to_string()
    }

    fn set_generation(&self, generation: u64) -> Result<(), DataplaneError> {
        self.lock().globals.set(GENERATION, generation)
    }

    fn generation(&self) -> Result<u64, DataplaneError> {
        self.lock().globals.get(GENERATION)
    }

    fn check_pins(&self) -> Result<Vec<PinRepair>, DataplaneError> {
        // Under the dataplane's lock: an upgrade or a reset never runs beside the check.
        let _inner = self.lock();
        self.check_pins_locked()
    }

    fn pin_health(&self) -> PinHealth {
        self.pin_watch().health()
    }

    fn wait_for_readers(&self) -> Result<(), DataplaneError> {
        // MEMBARRIER_CMD_GLOBAL is synchronize_rcu(): every XDP/TC run and test run holds the
        // RCU read lock, so when it returns no run that began before it is still going.
        const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
        // SAFETY: plain syscall with integer arguments.
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0 as libc::c_long, 0 as libc::c_long) };
        if r != 0 {
            return Err(DataplaneError::Io {
                path: "membarrier".into(),
                op: "MEMBARRIER_CMD_GLOBAL",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

fn map_type_name(t: aya::maps::MapType) -> &'static str {
    use aya::maps::MapType as T;
    match t {
        T::Hash => "hash",
        T::Array => "array",
        T::PerCpuArray => "percpu_array",
        T::PerCpuHash => "percpu_hash",
        T::LruHash => "lru_hash",
        T::LpmTrie => "lpm_trie",
        T::DevMap => "devmap",
        T::DevMapHash => "devmap_hash",
        T::RingBuf => "ringbuf",
        _ => "other",
    }
}
