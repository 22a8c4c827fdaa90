// One microVM: builds KVM state, guest memory, boot data and devices from a `VmConfig`, runs a
// thread per vCPU and one device thread, and ends with exactly one `VmExit` however it ends
// (guest reset, crash, host stop, VMM error). Nothing the guest does ends the host process.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::arch::x86_64::{cpuid, layout, msr, mptable, pvh, regs};
use crate::devices::i8042::{self, I8042};
use crate::devices::serial::{self, Serial};
use crate::devices::virtio::blk::Block;
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::{MmioTransport, VirtioDevice, REG_QUEUE_NOTIFY};
use crate::devices::virtio::net::{Net, DEFAULT_MAC};
use crate::devices::virtio::fs::Fs;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::stream::HostStream;
use crate::json::{self, Json};
use crate::sys::{self, EventFd, PollFd};
use crate::vstate::kvm::Kvm;
use crate::vstate::memory::GuestMemory;
use crate::vstate::vcpu::{Vcpu, VcpuExit};
use crate::vstate::vm::Vm;

#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: String,
    pub read_only: bool,
    pub serial: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: String,
    pub cpus: u8,
    pub memory_mib: u64,
    pub disks: Vec<DiskConfig>,
    pub agent_socket: Option<String>,
    pub net_socket: Option<String>,
    pub console_log: Option<String>,
    pub rng: bool,
    /// virtio-fs shares (after the other devices), served in-process.
    pub shares: Vec<ShareConfig>,
}

#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub tag: String,
    pub host_path: String,
    pub read_only: bool,
}

#[derive(Debug)]
pub enum ConfigError {
    /// The spec is not valid JSON.
    Json(json::JsonError),
    /// A field is missing or has the wrong type or range.
    Field(&'static str, &'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ConfigError::Json(e) => write!(f, "VM spec: {e}"),
            ConfigError::Field(name, why) => write!(f, "VM spec field `{name}` {why}"),
        }
    }
}

fn opt_str(v: &Json, k: &'static str) -> Result<Option<String>, ConfigError> {
    match v.get(k) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Str(s)) if s.is_empty() => Ok(None),
        Some(Json::Str(s)) => Ok(Some(s.clone())),
        _ => Err(ConfigError::Field(k, "must be a string")),
    }
}

fn int_in(v: &Json, k: &'static str, lo: u64, hi: u64, why: &'static str) -> Result<u64, ConfigError> {
    let n = v.get(k).and_then(|x| x.as_f64()).ok_or(ConfigError::Field(k, "must be a number"))?;
    if n.fract() != 0.0 || n < lo as f64 || n > hi as f64 {
        return Err(ConfigError::Field(k, why));
    }
    Ok(n as u64)
}

impl VmConfig {
    /// Parses the JSON form of src/vm/backend.ts's VmSpec.
    pub fn from_json(s: &str) -> Result<VmConfig, ConfigError> {
        let v = json::parse(s).map_err(ConfigError::Json)?;
        if !matches!(v, Json::Obj(_)) {
            return Err(ConfigError::Field("(root)", "must be an object"));
        }
        let kernel = opt_str(&v, "kernel")?.ok_or(ConfigError::Field("kernel", "is required (path of an ELF vmlinux)"))?;
        let cmdline = opt_str(&v, "cmdline")?.unwrap_or_default();
        let cpus = int_in(&v, "cpus", 1, layout::MAX_VCPUS as u64, "must be an integer from 1 to 32")? as u8;
        let memory_mib = int_in(&v, "memoryMiB", 16, 64 * 1024, "must be an integer from 16 to 65536")?;
        let mut disks = Vec::new();
        match v.get("disks") {
            None | Some(Json::Null) => {}
            Some(Json::Arr(a)) => {
                for d in a {
                    let path = opt_str(d, "path")?.ok_or(ConfigError::Field("disks[].path", "is required"))?;
                    let read_only = match d.get("readOnly") {
                        None => false,
                        Some(b) => b.as_bool().ok_or(ConfigError::Field("disks[].readOnly", "must be a boolean"))?,
                    };
                    let serial = opt_str(d, "serial")?;
                    disks.push(DiskConfig { path, read_only, serial });
                }
            }
            _ => return Err(ConfigError::Field("disks", "must be an array")),
        }
        let rng = match v.get("rng") {
            None => true,
            Some(b) => b.as_bool().ok_or(ConfigError::Field("rng", "must be a boolean"))?,
        };
        let mut shares = Vec::new();
        match v.get("shares") {
            None | Some(Json::Null) => {}
            Some(Json::Arr(a)) => {
                for d in a {
                    let tag = opt_str(d, "tag")?.ok_or(ConfigError::Field("shares[].tag", "is required"))?;
                    let host_path = opt_str(d, "hostPath")?.ok_or(ConfigError::Field("shares[].hostPath", "is required"))?;
                    let read_only = match d.get("readOnly") {
                        None => false,
                        Some(b) => b.as_bool().ok_or(ConfigError::Field("shares[].readOnly", "must be a boolean"))?,
                    };
                    shares.push(ShareConfig { tag, host_path, read_only });
                }
            }
            _ => return Err(ConfigError::Field("shares", "must be an array")),
        }
        Ok(VmConfig {
            kernel,
            initrd: opt_str(&v, "initrd")?,
            cmdline,
            cpus,
            memory_mib,
            disks,
            agent_socket: opt_str(&v, "agentSocket")?,
            net_socket: opt_str(&v, "netSocket")?,
            console_log: opt_str(&v, "consoleLog")?,
            rng,
            shares,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Reset = 1,
    Poweroff = 2,
    Crash = 3,
    Killed = 4,
    Error = 5,
}

impl ExitReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExitReason::Reset => "reset",
            ExitReason::Poweroff => "poweroff",
            ExitReason::Crash => "crash",
            ExitReason::Killed => "killed",
            ExitReason::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct VmExit {
    pub reason: ExitReason,
    pub detail: String,
}

#[derive(Debug)]
pub enum VmmError {
    /// Building the VM failed; the message says which part and why.
    Build(String),
    /// start() was called twice.
    AlreadyStarted,
    /// A thread could not be spawned.
    Spawn(std::io::Error),
}

impl fmt::Display for VmmError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VmmError::Build(s) => write!(f, "{s}"),
            VmmError::AlreadyStarted => write!(f, "the VM was already started"),
            VmmError::Spawn(e) => write!(f, "cannot start a VMM thread: {e}"),
        }
    }
}

/// Port-I/O and MMIO devices as the vCPU threads see them.
struct Bus {
    serial: Mutex<Serial>,
    i8042: I8042,
    mmio: Vec<Arc<Mutex<MmioTransport>>>,
}

/// What the device thread waits on.
struct Notifier {
    fd: EventFd,
    device: usize,
    queue: usize,
}

#[derive(Default)]
pub struct Stats {
    pub created_ns: AtomicU64,
    pub start_ns: AtomicU64,
    pub first_exit_ns: AtomicU64,
    pub last_exit_ns: AtomicU64,
    pub exits: AtomicU64,
    pub pio_exits: AtomicU64,
    pub mmio_exits: AtomicU64,
    /// Where the boot vCPU was when the VM was stopped: the first clue to why a guest hung.
    pub bsp_rip_at_stop: AtomicU64,
}

struct Shared {
    exit: Mutex<Option<VmExit>>,
    exited: Condvar,
    stopping: AtomicBool,
    wake: EventFd,
    vcpus: Vec<Arc<Vcpu>>,
    threads: Mutex<Vec<u64>>,
    bus: Bus,
    stats: Stats,
    epoch: Instant,
}

impl Shared {
    /// Records the VM's end (the first report wins) and kicks every thread out of its wait.
    fn finish(&self, reason: ExitReason, detail: String) {
        {
            let mut e = self.exit.lock().unwrap_or_else(|p| p.into_inner());
            if e.is_none() {
                *e = Some(VmExit { reason, detail });
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        for v in &self.vcpus {
            v.set_immediate_exit(true);
        }
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            unsafe { sys::pthread_kill(*t, sys::kick_signal()) };
        }
        self.wake.signal();
        self.exited.notify_all();
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

pub struct Vmm {
    shared: Arc<Shared>,
    // Kept alive for the VM's lifetime: KVM objects and guest memory.
    _vm: Vm,
    _kvm: Kvm,
    mem: Arc<GuestMemory>,
    notifiers: Mutex<Option<Vec<Notifier>>>,
    _irqs: Vec<Arc<EventFd>>,
    joins: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicBool,
    pub cmdline: String,
}

fn build_err<E: fmt::Display>(what: &str) -> impl Fn(E) -> VmmError + '_ {
    move |e| VmmError::Build(format!("{what}: {e}"))
}

impl Vmm {
    pub fn create(cfg: &VmConfig) -> Result<Vmm, VmmError> {
        let epoch = Instant::now();
        sys::install_kick_handler().map_err(build_err("cannot install the vCPU kick signal handler"))?;
        let kvm = Kvm::new().map_err(|e| VmmError::Build(e.to_string()))?;
        let vm = Vm::new(&kvm).map_err(|e| VmmError::Build(e.to_string()))?;
        let mem = Arc::new(GuestMemory::new(cfg.memory_mib << 20).map_err(|e| VmmError::Build(e.to_string()))?);
        vm.register_memory(&mem).map_err(|e| VmmError::Build(e.to_string()))?;

        // Devices, in a fixed order: disks (vda, vdb, ...), net, agent console, rng.
        let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
        for d in &cfg.disks {
            devices.push(Box::new(Block::open(&d.path, d.read_only, d.serial.as_deref()).map_err(VmmError::Build)?));
        }
        if let Some(p) = &cfg.net_socket {
            devices.push(Box::new(Net::new(HostStream::connect(p, "guest NIC").map_err(VmmError::Build)?, DEFAULT_MAC)));
        }
        if let Some(p) = &cfg.agent_socket {
            devices.push(Box::new(Console::new("agent", HostStream::connect(p, "agent console port").map_err(VmmError::Build)?)));
        }
        if cfg.rng {
            devices.push(Box::new(Rng::new().map_err(VmmError::Build)?));
        }
        for s in &cfg.shares {
            devices.push(Box::new(Fs::new(&s.tag, &s.host_path, s.read_only).map_err(VmmError::Build)?));
        }
        if devices.len() as u32 > layout::IRQ_MAX - layout::IRQ_BASE + 1 {
            return Err(VmmError::Build(format!("too many devices ({}); at most {} fit", devices.len(), layout::IRQ_MAX - layout::IRQ_BASE + 1)));
        }

        let mut cmdline = cfg.cmdline.trim().to_string();
        let mut irqs = Vec::new();
        let mut mmio = Vec::new();
        let mut notifiers = Vec::new();
        for (i, dev) in devices.into_iter().enumerate() {
            let base = layout::MMIO_BASE + i as u64 * layout::MMIO_SIZE;
            let gsi = layout::IRQ_BASE + i as u32;
            let irq = Arc::new(EventFd::new().map_err(build_err("eventfd"))?);
            vm.register_irqfd(irq.fd(), gsi).map_err(|e| VmmError::Build(e.to_string()))?;
            for q in 0..dev.queue_max_sizes().len() {
                let fd = EventFd::new().map_err(build_err("eventfd"))?;
                vm.register_ioeventfd(fd.fd(), base + REG_QUEUE_NOTIFY, q as u32).map_err(|e| VmmError::Build(e.to_string()))?;
                notifiers.push(Notifier { fd, device: i, queue: q });
            }
            cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{gsi}"));
            mmio.push(Arc::new(Mutex::new(MmioTransport::new(dev, mem.clone(), Some(irq.clone())))));
            irqs.push(irq);
        }

        // Boot data.
        let kernel = std::fs::read(&cfg.kernel).map_err(|e| VmmError::Build(format!("cannot read kernel {}: {e}", cfg.kernel)))?;
        let (entry, kernel_end) = pvh::load_kernel(&mem, &kernel).map_err(|e| VmmError::Build(format!("kernel {}: {e}", cfg.kernel)))?;
        let initrd = match &cfg.initrd {
            Some(p) => {
                let data = std::fs::read(p).map_err(|e| VmmError::Build(format!("cannot read initramfs {p}: {e}")))?;
                let at = pvh::load_initrd(&mem, &data, kernel_end).map_err(|e| VmmError::Build(format!("initramfs {p}: {e}")))?;
                Some((at, data.len() as u64))
            }
            None => None,
        };
        let start_info = pvh::write_start_info(&mem, &cmdline, initrd).map_err(|e| VmmError::Build(e.to_string()))?;
        mptable::setup(&mem, cfg.cpus).map_err(|e| VmmError::Build(e.to_string()))?;

        // vCPUs.
        let supported = kvm.supported_cpuid().map_err(|e| VmmError::Build(e.to_string()))?;
        let run_size = kvm.vcpu_mmap_size().map_err(|e| VmmError::Build(e.to_string()))?;
        let mut vcpus = Vec::new();
        for id in 0..cfg.cpus {
            let v = Vcpu::new(&vm, id, run_size).map_err(|e| VmmError::Build(e.to_string()))?;
            v.set_cpuid(&cpuid::vcpu_cpuid(&supported, id, cfg.cpus)).map_err(|e| VmmError::Build(e.to_string()))?;
            v.set_msrs(&msr::boot_msrs()).map_err(|e| VmmError::Build(e.to_string()))?;
            let mut lapic = v.get_lapic().map_err(|e| VmmError::Build(e.to_string()))?;
            regs::wire_lapic(&mut lapic);
            v.set_lapic(&lapic).map_err(|e| VmmError::Build(e.to_string()))?;
            v.set_fpu(&regs::boot_fpu()).map_err(|e| VmmError::Build(e.to_string()))?;
            if id == 0 {
                let base = v.get_sregs().map_err(|e| VmmError::Build(e.to_string()))?;
                let s = regs::pvh_sregs(&mem, base).map_err(|e| VmmError::Build(e.to_string()))?;
                v.set_sregs(&s).map_err(|e| VmmError::Build(e.to_string()))?;
                v.set_regs(&regs::pvh_regs(entry, start_info)).map_err(|e| VmmError::Build(e.to_string()))?;
            }
            vcpus.push(Arc::new(v));
        }

        let log: Option<Box<dyn Write + Send>> = match &cfg.console_log {
            Some(p) => Some(Box::new(
                OpenOptions::new().create(true).append(true).open(p).map_err(|e| VmmError::Build(format!("cannot open console log {p}: {e}")))?,
            )),
            None => None,
        };
        let serial_irq = Arc::new(EventFd::new().map_err(build_err("eventfd"))?);
        vm.register_irqfd(serial_irq.fd(), layout::SERIAL_IRQ).map_err(|e| VmmError::Build(e.to_string()))?;
        irqs.push(serial_irq.clone());

        let shared = Arc::new(Shared {
            exit: Mutex::new(None),
            exited: Condvar::new(),
            stopping: AtomicBool::new(false),
            wake: EventFd::new().map_err(build_err("eventfd"))?,
            vcpus,
            threads: Mutex::new(Vec::new()),
            bus: Bus { serial: Mutex::new(Serial::new(log, Some(serial_irq))), i8042: I8042, mmio },
            stats: Stats::default(),
            epoch,
        });
        shared.stats.created_ns.store(shared.now_ns(), Ordering::Relaxed);
        Ok(Vmm {
            shared,
            _vm: vm,
            _kvm: kvm,
            mem,
            notifiers: Mutex::new(Some(notifiers)),
            _irqs: irqs,
            joins: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            cmdline,
        })
    }

    pub fn start(&self) -> Result<(), VmmError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(VmmError::AlreadyStarted);
        }
        self.shared.stats.start_ns.store(self.shared.now_ns(), Ordering::Relaxed);
        let notifiers = self.notifiers.lock().unwrap().take().unwrap_or_default();
        let mut joins = self.joins.lock().unwrap();
        let sh = self.shared.clone();
        let h = std::thread::Builder::new()
            .name("msb-devices".into())
            .spawn(move || device_thread(sh, notifiers))
            .map_err(VmmError::Spawn)?;
        joins.push(h);
        for (i, v) in self.shared.vcpus.iter().enumerate() {
            let sh = self.shared.clone();
            let v = v.clone();
            let h = std::thread::Builder::new()
                .name(format!("msb-vcpu{i}"))
                .spawn(move || vcpu_thread(sh, v))
                .map_err(|e| {
                    self.shared.finish(ExitReason::Error, format!("cannot start vCPU thread: {e}"));
                    VmmError::Spawn(e)
                })?;
            self.shared.threads.lock().unwrap().push(h.as_pthread_t() as u64);
            joins.push(h);
        }
        // A stop requested before the threads registered must still reach them.
        if self.shared.stopping.load(Ordering::SeqCst) {
            let e = self.shared.exit.lock().unwrap().clone();
            if let Some(e) = e {
                self.shared.finish(e.reason, e.detail);
            }
        }
        Ok(())
    }

    pub fn request_stop(&self) {
        self.shared.finish(ExitReason::Killed, "stopped by the host".into());
    }

    pub fn poll_exit(&self) -> Option<VmExit> {
        self.shared.exit.lock().unwrap().clone()
    }

    /// Blocks until the VM has ended and all its threads are gone.
    pub fn wait(&self) -> VmExit {
        if !self.started.load(Ordering::SeqCst) && self.poll_exit().is_none() {
            return VmExit { reason: ExitReason::Error, detail: "wait called on a VM that was never started".into() };
        }
        let mut e = self.shared.exit.lock().unwrap();
        while e.is_none() {
            e = self.shared.exited.wait(e).unwrap();
        }
        let exit = e.clone().unwrap();
        drop(e);
        self.join();
        exit
    }

    fn join(&self) {
        let joins: Vec<_> = self.joins.lock().unwrap().drain(..).collect();
        for j in joins {
            let _ = j.join();
        }
        self.shared.bus.serial.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn stats_json(&self) -> String {
        let s = &self.shared.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let broken: Vec<String> = self
            .shared
            .bus
            .mmio
            .iter()
            .filter_map(|t| t.lock().ok().and_then(|t| t.broken.clone()))
            .map(|b| json::quote(&b))
            .collect();
        format!(
            "{{\"createdNs\":{},\"startNs\":{},\"firstExitNs\":{},\"lastExitNs\":{},\"exits\":{},\"pioExits\":{},\"mmioExits\":{},\"bspRipAtStop\":{},\"serialBytes\":{},\"brokenDevices\":[{}]}}",
            ld(&s.created_ns),
            ld(&s.start_ns),
            ld(&s.first_exit_ns),
            ld(&s.last_exit_ns),
            ld(&s.exits),
            ld(&s.pio_exits),
            ld(&s.mmio_exits),
            ld(&s.bsp_rip_at_stop),
            self.shared.bus.serial.lock().map(|s| s.bytes_out).unwrap_or(0),
            broken.join(",")
        )
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.shared.finish(ExitReason::Killed, "VM destroyed".into());
        self.join();
    }
}

const PCI_CONFIG_ADDRESS: u16 = 0xcf8;

fn pio_write(sh: &Shared, port: u16, data: &[u8]) {
    match port {
        p if (serial::COM1_BASE..serial::COM1_BASE + serial::COM1_LEN).contains(&p) => {
            sh.bus.serial.lock().unwrap_or_else(|e| e.into_inner()).write(p - serial::COM1_BASE, data[0]);
        }
        i8042::DATA_PORT | i8042::COMMAND_PORT
            if sh.bus.i8042.write(port, data[0]) => {
                sh.finish(ExitReason::Reset, "guest requested a reset through the keyboard controller".into());
            }
        _ => {}
    }
}

fn pio_read(sh: &Shared, port: u16, data: &mut [u8]) {
    match port {
        p if (serial::COM1_BASE..serial::COM1_BASE + serial::COM1_LEN).contains(&p) => {
            data[0] = sh.bus.serial.lock().unwrap_or_else(|e| e.into_inner()).read(p - serial::COM1_BASE);
        }
        i8042::DATA_PORT | i8042::COMMAND_PORT => data[0] = sh.bus.i8042.read(port),
        // No PCI bus: config reads float high, so the guest finds nothing there.
        PCI_CONFIG_ADDRESS..=0xcff => data.fill(0xff),
        _ => data.fill(0xff),
    }
}

fn mmio_device(sh: &Shared, addr: u64) -> Option<(&Arc<Mutex<MmioTransport>>, u64)> {
    let off = addr.checked_sub(layout::MMIO_BASE)?;
    let idx = (off / layout::MMIO_SIZE) as usize;
    sh.bus.mmio.get(idx).map(|t| (t, off % layout::MMIO_SIZE))
}

fn vcpu_thread(sh: Arc<Shared>, vcpu: Arc<Vcpu>) {
    sys::unblock_kick_signal();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_vcpu(&sh, &vcpu)));
    if r.is_err() {
        sh.finish(ExitReason::Error, format!("vCPU {} thread panicked (a VMM bug)", vcpu.id));
    }
}

fn run_vcpu(sh: &Shared, vcpu: &Vcpu) {
    loop {
        if sh.stopping.load(Ordering::SeqCst) {
            if vcpu.id == 0 {
                if let Ok(r) = vcpu.get_regs() {
                    sh.stats.bsp_rip_at_stop.store(r.rip, Ordering::Relaxed);
                }
            }
            return;
        }
        let exit = match vcpu.run() {
            Ok(e) => e,
            Err(e) => {
                sh.finish(ExitReason::Error, format!("vCPU {}: {e}", vcpu.id));
                return;
            }
        };
        if !matches!(exit, VcpuExit::Interrupted) {
            let now = sh.now_ns();
            let _ = sh.stats.first_exit_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            sh.stats.last_exit_ns.store(now, Ordering::Relaxed);
            sh.stats.exits.fetch_add(1, Ordering::Relaxed);
        }
        match exit {
            VcpuExit::IoOut { port, size, count, data_offset } => {
                sh.stats.pio_exits.fetch_add(1, Ordering::Relaxed);
                if !matches!(size, 1 | 2 | 4) {
                    continue;
                }
                let mut d = [0u8; 4];
                for i in 0..count.min(4096) {
                    if vcpu.read_io(data_offset + i * size, &mut d[..size]) {
                        pio_write(sh, port, &d[..size]);
                    }
                }
            }
            VcpuExit::IoIn { port, size, count, data_offset } => {
                sh.stats.pio_exits.fetch_add(1, Ordering::Relaxed);
                if !matches!(size, 1 | 2 | 4) {
                    continue;
                }
                let mut d = [0u8; 4];
                for i in 0..count.min(4096) {
                    pio_read(sh, port, &mut d[..size]);
                    vcpu.write_io(data_offset + i * size, &d[..size]);
                }
            }
            VcpuExit::MmioRead { addr, len } => {
                sh.stats.mmio_exits.fetch_add(1, Ordering::Relaxed);
                let mut data = [0u8; 8];
                if let Some((t, off)) = mmio_device(sh, addr) {
                    t.lock().unwrap_or_else(|e| e.into_inner()).read(off, &mut data[..len]);
                }
                vcpu.set_mmio_read_data(&data[..len]);
            }
            VcpuExit::MmioWrite { addr, len, data } => {
                sh.stats.mmio_exits.fetch_add(1, Ordering::Relaxed);
                if let Some((t, off)) = mmio_device(sh, addr) {
                    let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(q) = t.write(off, &data[..len]) {
                        t.notify(q);
                    }
                }
            }
            VcpuExit::Hlt => {
                sh.finish(ExitReason::Poweroff, format!("vCPU {} halted with interrupts off", vcpu.id));
                return;
            }
            VcpuExit::Shutdown => {
                sh.finish(ExitReason::Reset, format!("vCPU {} triple-faulted (shutdown): the guest reset", vcpu.id));
                return;
            }
            VcpuExit::SystemEvent(t) => {
                let (r, what) = match t {
                    1 => (ExitReason::Poweroff, "powered off"),
                    2 => (ExitReason::Reset, "reset"),
                    _ => (ExitReason::Crash, "crashed"),
                };
                sh.finish(r, format!("guest {what} (KVM system event {t})"));
                return;
            }
            VcpuExit::FailEntry(r) => {
                sh.finish(ExitReason::Crash, format!("vCPU {}: KVM could not enter the guest (hardware reason {r:#x})", vcpu.id));
                return;
            }
            VcpuExit::InternalError { suberror, data } => {
                let rip = vcpu.get_regs().map(|r| format!("{:#x}", r.rip)).unwrap_or_else(|_| "?".into());
                let what = match suberror {
                    1 => "emulation failure (an instruction KVM cannot emulate)",
                    2 => "simultaneous exceptions",
                    3 => "delivery event failure",
                    _ => "internal error",
                };
                sh.finish(
                    ExitReason::Crash,
                    format!("vCPU {}: KVM {what} at rip {rip}, suberror {suberror}, data {data:x?}", vcpu.id),
                );
                return;
            }
            VcpuExit::Interrupted => {}
            VcpuExit::Other(r) => {
                sh.finish(ExitReason::Crash, format!("vCPU {}: unexpected KVM exit reason {r}", vcpu.id));
                return;
            }
        }
    }
}

fn device_thread(sh: Arc<Shared>, notifiers: Vec<Notifier>) {
    sys::unblock_kick_signal();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_devices(&sh, &notifiers)));
    if r.is_err() {
        sh.finish(ExitReason::Error, "device thread panicked (a VMM bug)".into());
    }
}

fn run_devices(sh: &Shared, notifiers: &[Notifier]) {
    let mut fds: Vec<PollFd> = Vec::new();
    let mut host_owner: Vec<usize> = Vec::new();
    while !sh.stopping.load(Ordering::SeqCst) {
        fds.clear();
        host_owner.clear();
        fds.push(PollFd { fd: sh.wake.fd(), events: sys::POLLIN, revents: 0 });
        for n in notifiers {
            fds.push(PollFd { fd: n.fd.fd(), events: sys::POLLIN, revents: 0 });
        }
        for (i, t) in sh.bus.mmio.iter().enumerate() {
            if let Some((fd, ev)) = t.lock().unwrap_or_else(|e| e.into_inner()).host_poll() {
                fds.push(PollFd { fd, events: ev, revents: 0 });
                host_owner.push(i);
            }
        }
        let r = unsafe { sys::poll(fds.as_mut_ptr(), fds.len() as u64, -1) };
        if r < 0 {
            if sys::errno() == sys::EINTR {
                continue;
            }
            sh.finish(ExitReason::Error, format!("device thread poll failed: {}", std::io::Error::last_os_error()));
            return;
        }
        if fds[0].revents != 0 {
            sh.wake.consume();
        }
        for (k, n) in notifiers.iter().enumerate() {
            if fds[1 + k].revents & sys::POLLIN != 0 && n.fd.consume() {
                sh.bus.mmio[n.device].lock().unwrap_or_else(|e| e.into_inner()).notify(n.queue);
            }
        }
        let base = 1 + notifiers.len();
        for (k, dev) in host_owner.iter().enumerate() {
            let rev = fds[base + k].revents;
            if rev != 0 {
                sh.bus.mmio[*dev].lock().unwrap_or_else(|e| e.into_inner()).host_event(rev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_backend_spec() {
        let c = VmConfig::from_json(
            r#"{"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0","cpus":2,"memoryMiB":256,
               "disks":[{"path":"/d","readOnly":true,"serial":"s1"}],"agentSocket":"/a","consoleLog":"/l"}"#,
        )
        .unwrap();
        assert_eq!(c.cpus, 2);
        assert_eq!(c.memory_mib, 256);
        assert!(c.disks[0].read_only);
        assert_eq!(c.disks[0].serial.as_deref(), Some("s1"));
        assert_eq!(c.net_socket, None);
        assert!(c.rng);
        assert!(c.shares.is_empty());
        let c = VmConfig::from_json(r#"{"kernel":"/k","cpus":1,"memoryMiB":64,"shares":[{"tag":"msbfs0","hostPath":"/srv","readOnly":true}]}"#).unwrap();
        assert_eq!((c.shares[0].tag.as_str(), c.shares[0].host_path.as_str(), c.shares[0].read_only), ("msbfs0", "/srv", true));
        assert!(VmConfig::from_json(r#"{"kernel":"/k","cpus":1,"memoryMiB":64,"shares":[{"tag":"x"}]}"#).unwrap_err().to_string().contains("hostPath"));
    }

    #[test]
    fn rejects_bad_specs_with_the_field_name() {
        let e = VmConfig::from_json(r#"{"kernel":"/k","cpus":0,"memoryMiB":64}"#).unwrap_err().to_string();
        assert!(e.contains("cpus"), "{e}");
        let e = VmConfig::from_json(r#"{"kernel":"/k","cpus":1,"memoryMiB":1.5}"#).unwrap_err().to_string();
        assert!(e.contains("memoryMiB"), "{e}");
        let e = VmConfig::from_json(r#"{"cpus":1,"memoryMiB":64}"#).unwrap_err().to_string();
        assert!(e.contains("kernel"), "{e}");
        assert!(VmConfig::from_json("[]").is_err());
        assert!(VmConfig::from_json(r#"{"kernel":"/k","cpus":1,"memoryMiB":64,"disks":[{"readOnly":true}]}"#).is_err());
    }
}
