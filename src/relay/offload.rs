//! The kernel fast path as the engine sees it (`media.kernel_offload`,
//! docs/kernel-fast-path.md): whether it runs, and, with the `kernel-offload` feature, the one
//! [`FastPath`](mcvideo_relay_fastpath::FastPath) of the process that the workers share.
//!
//! Opened once at engine start. `off` never opens it; `auto` opens it and on any failure (not
//! built in, no privilege, a kernel that cannot, a media address it cannot serve) logs one line
//! and runs everything in userspace; `required` refuses to start instead.

use std::fmt;
use std::io;

/// `media.kernel_offload`: whether end_to_end and plain RTP legs are forwarded by the kernel
/// fast path (a TCX BPF program) once latched and granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelOffload {
    /// Use the fast path when the build, the privilege and the kernel allow it; else
    /// userspace, with one log line.
    #[default]
    Auto,
    /// Never: everything in userspace.
    Off,
    /// The fast path or no start.
    Required,
}

impl KernelOffload {
    /// `"auto"`, `"off"` or `"required"`.
    pub fn parse(s: &str) -> Option<KernelOffload> {
        match s {
            "auto" => Some(KernelOffload::Auto),
            "off" => Some(KernelOffload::Off),
            "required" => Some(KernelOffload::Required),
            _ => None,
        }
    }

    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelOffload::Auto => "auto",
            KernelOffload::Off => "off",
            KernelOffload::Required => "required",
        }
    }
}

impl fmt::Display for KernelOffload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process's fast path, shared by the workers: the loaded program and its maps, and where
/// legs enter and leave this host.
#[cfg(feature = "kernel-offload")]
#[derive(Debug)]
pub(crate) struct Kernel {
    /// The program, its maps and its links.
    pub(crate) fp: mcvideo_relay_fastpath::FastPath,
    routes: super::kroute::Routes,
    /// When the fan-out receivers' Ethernet addresses were last looked up again.
    neighbours_at: Option<std::time::Instant>,
}

/// [`Kernel`] as the workers hold it.
#[cfg(feature = "kernel-offload")]
pub(crate) type Handle = std::sync::Arc<std::sync::Mutex<Kernel>>;

#[cfg(feature = "kernel-offload")]
impl Kernel {
    /// Sets `leg`'s egress interface for its destination and makes sure the program sees its
    /// source's packets (attaching it at TCX ingress of the interface they arrive on, the first
    /// time one does): `Err` says why the leg stays in userspace.
    pub(crate) fn route(
        &mut self,
        leg: &mut mcvideo_relay_fastpath::Leg,
        now: std::time::Instant,
    ) -> Result<(), String> {
        use super::kroute::Via;
        let ingress = match self.routes.via(*leg.source.ip(), now)? {
            Via::Local => "lo".to_owned(),
            Via::Iface(name, _) => name,
        };
        leg.egress.ifindex = match self.routes.via(*leg.egress.to.ip(), now)? {
            Via::Local => 0,
            Via::Iface(_, i) => i,
        };
        for e in &mut leg.fanout {
            e.ifindex = match self.routes.via(*e.to.ip(), now)? {
                // A copy for this host goes through lo, which takes it only from lo.
                Via::Local if ingress == "lo" => 0,
                Via::Local => return Err(format!("{} is on this host", e.to)),
                Via::Iface(_, i) => i,
            };
        }
        if !leg.fanout.is_empty() && self.routes.refreshed(&mut self.neighbours_at) {
            // The receivers' Ethernet addresses follow the neighbour table as the routes do.
            if let Err(e) = self.fp.refresh_neighbours() {
                tracing::warn!(error = %e, "cannot refresh the fan-out receivers' Ethernet addresses");
            }
        }
        if !self.fp.interfaces().contains(&ingress.as_str()) {
            self.fp
                .attach(&ingress)
                .map_err(|e| format!("cannot attach to {ingress}: {e}"))?;
            tracing::info!(interface = %ingress, "kernel fast path attached to one more interface");
        }
        Ok(())
    }
}

/// The engine's fast path: open, or why not.
pub(crate) struct Offload {
    #[cfg(feature = "kernel-offload")]
    pub(crate) fp: Option<Handle>,
    /// Why it does not run (`None` while it does).
    pub(crate) inactive: Option<String>,
}

impl fmt::Debug for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offload")
            .field("active", &self.active())
            .field("inactive", &self.inactive)
            .finish()
    }
}

impl Offload {
    /// Whether the kernel fast path runs.
    pub(crate) fn active(&self) -> bool {
        self.inactive.is_none()
    }

    /// Not running, for `reason`.
    fn inactive(reason: String) -> Offload {
        Offload {
            #[cfg(feature = "kernel-offload")]
            fp: None,
            inactive: Some(reason),
        }
    }

    /// Opens the fast path as `mode` says for media interfaces `ips`, with entries for the
    /// relay ports `ports` (all the interfaces' ranges). `Err` only for `required` when it
    /// cannot run.
    pub(crate) fn open(
        mode: KernelOffload,
        ips: &[std::net::IpAddr],
        ports: std::ops::RangeInclusive<u16>,
    ) -> io::Result<Offload> {
        if mode == KernelOffload::Off {
            tracing::info!(
                kernel_offload = "off",
                "kernel fast path off (media.kernel_offload): media forwarded in userspace"
            );
            return Ok(Offload::inactive("media.kernel_offload is off".to_owned()));
        }
        match Self::try_open(ips, ports.clone()) {
            Ok(o) => {
                tracing::info!(
                    kernel_offload = %mode,
                    interfaces = ?o.interfaces(),
                    ports = ?ports,
                    "kernel fast path on: latched, granted end_to_end and plain RTP legs are \
                     forwarded in the kernel"
                );
                Ok(o)
            }
            Err(reason) if mode == KernelOffload::Required => Err(io::Error::other(format!(
                "media.kernel_offload = \"required\" but the kernel fast path cannot run: \
                 {reason}"
            ))),
            Err(reason) => {
                tracing::warn!(
                    kernel_offload = "auto",
                    reason = %reason,
                    "kernel fast path not available: media forwarded in userspace"
                );
                Ok(Offload::inactive(reason))
            }
        }
    }

    /// The fast path the workers share, if it runs.
    #[cfg(feature = "kernel-offload")]
    pub(crate) fn handle(&self) -> Option<Handle> {
        self.fp.clone()
    }

    /// The interfaces the program is attached to.
    fn interfaces(&self) -> Vec<String> {
        #[cfg(feature = "kernel-offload")]
        if let Some(fp) = &self.fp {
            let k = fp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            return k.fp.interfaces().into_iter().map(str::to_owned).collect();
        }
        Vec::new()
    }

    #[cfg(not(feature = "kernel-offload"))]
    fn try_open(
        _ips: &[std::net::IpAddr],
        _ports: std::ops::RangeInclusive<u16>,
    ) -> Result<Offload, String> {
        Err("this build has no kernel fast path (cargo feature kernel-offload)".to_owned())
    }

    #[cfg(feature = "kernel-offload")]
    fn try_open(
        ips: &[std::net::IpAddr],
        ports: std::ops::RangeInclusive<u16>,
    ) -> Result<Offload, String> {
        // The program rewrites the source to the relay's own address: it must be one address,
        // IPv4 (a wildcard bind has none to write).
        if let Some(ip) = ips
            .iter()
            .find(|ip| !matches!(ip, std::net::IpAddr::V4(v4) if !v4.is_unspecified()))
        {
            return Err(format!(
                "media address {ip} is not one IPv4 address (the fast path rewrites the \
                 source to the relay's own address; a wildcard or IPv6 media address stays in \
                 userspace)"
            ));
        }
        // `lo` from the start (clients on this host); the interface a leg's source arrives on
        // is attached when its first leg is installed (Kernel::route).
        match mcvideo_relay_fastpath::FastPath::open_with_ports("lo", ports) {
            Ok(fp) => Ok(Offload {
                fp: Some(std::sync::Arc::new(std::sync::Mutex::new(Kernel {
                    fp,
                    routes: super::kroute::Routes::default(),
                    neighbours_at: None,
                }))),
                inactive: None,
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_modes_and_nothing_else() {
        for m in [
            KernelOffload::Auto,
            KernelOffload::Off,
            KernelOffload::Required,
        ] {
            assert_eq!(KernelOffload::parse(m.as_str()), Some(m));
        }
        assert_eq!(KernelOffload::parse("on"), None);
        assert_eq!(KernelOffload::parse("Auto"), None);
        assert_eq!(KernelOffload::default(), KernelOffload::Auto);
    }

    #[test]
    fn off_never_opens() {
        let o = Offload::open(KernelOffload::Off, &[], 30_000..=30_015).unwrap();
        assert!(!o.active());
    }
}
