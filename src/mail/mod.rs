//! Clients of the mail servers an e-mail inbox names: IMAP to read its folder
//! ([`imap`]) and SMTP to send replies ([`smtp`]), over TLS, STARTTLS or (to loopback
//! only) plain TCP. Every connection goes to an address checked when it is resolved:
//! loopback, private, link-local and cloud-metadata addresses are refused unless the
//! settings allow them, and the address checked is the one connected to, so a name
//! cannot resolve to one address for the check and another for the connection.
//! Failures say in words at which step they happened.

pub mod imap;
pub mod smtp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain, then upgraded with STARTTLS before anything secret is sent (143, 587).
    StartTls,
    /// Plain all the way: only to a server on this machine.
    None,
}

impl Security {
    pub const NAMES: [&'static str; 3] = ["tls", "starttls", "none"];

    pub fn parse(s: &str) -> Option<Security> {
        match s {
            "tls" => Some(Security::Tls),
            "starttls" => Some(Security::StartTls),
            "none" => Some(Security::None),
            _ => None,
        }
    }
}

/// The step a connection failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Dns,
    Tcp,
    Tls,
    Auth,
    Folder,
    /// The server answered something the client could not use.
    Protocol,
    /// The server refused a mail.
    Send,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Dns => "dns",
            Stage::Tcp => "tcp",
            Stage::Tls => "tls",
            Stage::Auth => "auth",
            Stage::Folder => "folder",
            Stage::Protocol => "protocol",
            Stage::Send => "send",
        }
    }
}

/// A failure talking to a mail server, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError {
    pub stage: Stage,
    pub message: String,
    /// Trying again as it is cannot succeed (bad credentials, a refused recipient).
    pub permanent: bool,
}

impl MailError {
    pub fn new(stage: Stage, message: impl Into<String>) -> MailError {
        MailError {
            stage,
            message: message.into(),
            permanent: matches!(stage, Stage::Auth | Stage::Folder),
        }
    }
}

impl fmt::Display for MailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where and how to reach a server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Private, loopback and link-local addresses may be reached (a test machine, an
    /// on-premises server); cloud metadata never is.
    pub allow_private: bool,
}

/// How long a connection may take to open, TLS included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream to a server, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Io for T {}

pub type Stream = Box<dyn Io>;

/// Whether an address is one a user-given host must not lead to.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()
                // 0.0.0.0/8 "this network", 100.64.0.0/10 carrier-grade NAT, 192.0.0.0/24
                // protocol assignments, 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved:
                // none is a public mail server.
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv6 forms that carry an IPv4 address are judged by that address:
            // mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and
            // 6to4 (2002:AABB:CCDD::/48).
            let embedded = |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_private(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_private(IpAddr::V4(embedded(s[1], s[2])));
            }
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The cloud providers' instance metadata addresses: never reachable, whatever the
/// settings, since they hand out the machine's credentials.
fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets() == [169, 254, 169, 254] || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
    }
}

/// Whether `host` names this machine, the only place a plain connection may go.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves the endpoint's host to the addresses it may be reached at.
pub async fn resolve(e: &Endpoint) -> Result<Vec<SocketAddr>, MailError> {
    let found: Vec<SocketAddr> = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((e.host.as_str(), e.port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(err)) => return Err(MailError::new(Stage::Dns, format!("cannot resolve {}: {err}", e.host))),
        Err(_) => return Err(MailError::new(Stage::Dns, format!("resolving {} timed out", e.host))),
    };
    if found.is_empty() {
        return Err(MailError::new(Stage::Dns, format!("{} has no address", e.host)));
    }
    let allowed: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| !is_metadata(a.ip()) && (e.allow_private || !is_private(a.ip())))
        .collect();
    if allowed.is_empty() {
        let mut refused = MailError::new(
            Stage::Dns,
            format!(
                "{} resolves only to private, loopback or link-local addresses ({}), which this server does not connect to",
                e.host,
                found[0].ip()
            ),
        );
        refused.permanent = true;
        return Err(refused);
    }
    if e.security == Security::None && !allowed.iter().all(|a| a.ip().is_loopback()) {
        let mut refused = MailError::new(
            Stage::Tls,
            format!("security 'none' is only for a server on this machine; {} is not", e.host),
        );
        refused.permanent = true;
        return Err(refused);
    }
    Ok(allowed)
}

/// Opens a TCP connection to the first address that answers.
pub async fn connect_tcp(e: &Endpoint) -> Result<TcpStream, MailError> {
    let mut last = None;
    for addr in resolve(e).await? {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(err)) => last = Some(format!("cannot connect to {}:{} ({addr}): {err}", e.host, e.port)),
            Err(_) => last = Some(format!("connecting to {}:{} ({addr}) timed out", e.host, e.port)),
        }
    }
    Err(MailError::new(
        Stage::Tcp,
        last.unwrap_or_else(|| format!("cannot connect to {}:{}", e.host, e.port)),
    ))
}

/// Wraps a connection in TLS, checking the server's certificate against the public
/// roots for `host`.
pub async fn tls(host: &str, tcp: TcpStream) -> Result<Stream, MailError> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| MailError::new(Stage::Tls, format!("'{host}' is not a name a certificate can be checked against")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(err)) => Err(MailError::new(Stage::Tls, format!("TLS with {host} failed: {err}"))),
        Err(_) => Err(MailError::new(Stage::Tls, format!("TLS with {host} timed out"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_told_apart() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
            "0.1.2.3",
            "198.18.0.9",
            "240.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_metadata("169.254.169.254".parse().unwrap()));
        assert!(is_loopback_host("localhost") && is_loopback_host("127.0.0.9") && !is_loopback_host("mail.example.com"));
    }

    #[tokio::test]
    async fn a_host_resolving_to_loopback_is_refused_unless_allowed() {
        let mut e = Endpoint {
            host: "127.0.0.1".into(),
            port: 25,
            security: Security::Tls,
            allow_private: false,
        };
        let refused = resolve(&e).await.unwrap_err();
        assert_eq!(refused.stage, Stage::Dns);
        assert!(refused.permanent);
        e.allow_private = true;
        assert_eq!(resolve(&e).await.unwrap().len(), 1);
    }
}
