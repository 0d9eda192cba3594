//! TLS by hand, for what tonic cannot be made to do: ClientHellos of TLS
//! 1.0 and 1.1, rustls clients pinned to one version, a handshake probe and
//! a relay that carries tonic's plaintext over a pinned client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::tls::Pki;

pub const HANDSHAKE: u8 = 22;
pub const ALERT: u8 = 21;
pub const FATAL: u8 = 2;
pub const PROTOCOL_VERSION: u8 = 70;

/// ECDHE and RSA CBC suites, as a TLS 1.0/1.1 client offers them.
pub const CLASSIC_SUITES: [u16; 5] = [0xc009, 0xc013, 0xc014, 0x002f, 0x0035];
/// The classic suites, then ECDHE AES-GCM ones that rustls speaks in 1.2.
pub const SUITES: [u16; 7] = [0xc009, 0xc013, 0xc014, 0x002f, 0x0035, 0xc02b, 0xc02f];

/// A ClientHello record for `version` ([3, 1] is TLS 1.0, [3, 2] 1.1,
/// [3, 3] 1.2) in both the record header and the hello.
pub fn client_hello(version: [u8; 2], suites: &[u16], extensions: &[u8]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    if !extensions.is_empty() {
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![HANDSHAKE];
    record.extend_from_slice(&version);
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What a TLS 1.2 ClientHello needs for an ECDSA server: groups, point
/// formats, signature algorithms.
pub fn tls12_extensions() -> Vec<u8> {
    [
        &[0x00, 0x0a, 0, 6, 0, 4, 0x00, 0x1d, 0x00, 0x17][..], // x25519, P-256
        &[0x00, 0x0b, 0, 2, 1, 0],                             // uncompressed points
        &[0x00, 0x0d, 0, 8, 0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    ]
    .concat()
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub content_type: u8,
    pub fragment: Vec<u8>,
}

/// Sends `hello` to the admin port; the first TLS record of the answer, or
/// `None` when the server closes without one.
pub fn first_record(port: u16, hello: &[u8]) -> Option<Record> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(hello).unwrap();
    let mut header = [0u8; 5];
    match s.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("no answer from the admin port: {e}"),
    }
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut fragment = vec![0; len];
    s.read_exact(&mut fragment).unwrap();
    Some(Record {
        content_type: header[0],
        fragment,
    })
}

/// A rustls client that trusts `pki`'s CA, speaks only `version`, offers h2
/// and presents `identity` (certificate and key files) if given.
pub fn pinned_client(
    pki: &Pki,
    identity: Option<(PathBuf, PathBuf)>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Handshakes with the admin port, sends the HTTP/2 preface and reads the
/// server's first frame: Ok only if the server speaks HTTP/2 on the
/// connection; the TLS error otherwise.
pub fn speak_h2(port: u16, config: Arc<rustls::ClientConfig>) -> Result<(), rustls::Error> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let tls_error =
        |e: std::io::Error| match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(e @ rustls::Error::AlertReceived(_)) => e.clone(),
            _ => panic!("not a TLS refusal: {e}"),
        };
    // Preface, then an empty SETTINGS frame.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .map_err(tls_error)?;
    let mut frame = [0u8; 9];
    tls.read_exact(&mut frame).map_err(tls_error)?;
    assert_eq!(frame[3], 4, "the server's first frame is SETTINGS");
    Ok(())
}

/// tonic offers TLS 1.2 and 1.3 and picks 1.3: to call the admin API over
/// one version only, tonic speaks plaintext HTTP/2 to a local port, and
/// each connection there is carried to the admin API by a rustls client
/// limited to `config`'s versions. Returns the port and the versions the
/// connections negotiated.
pub fn pinned_tls_relay(
    admin_port: u16,
    config: Arc<rustls::ClientConfig>,
) -> (u16, Arc<Mutex<Vec<rustls::ProtocolVersion>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let negotiated = Arc::new(Mutex::new(Vec::new()));
    let seen = negotiated.clone();
    std::thread::spawn(move || {
        for plain in listener.incoming().map_while(Result::ok) {
            let (config, seen) = (config.clone(), seen.clone());
            std::thread::spawn(move || relay(plain, admin_port, config, seen));
        }
    });
    (port, negotiated)
}

fn relay(
    mut plain: TcpStream,
    admin_port: u16,
    config: Arc<rustls::ClientConfig>,
    negotiated: Arc<Mutex<Vec<rustls::ProtocolVersion>>>,
) -> std::io::Result<()> {
    use std::io::ErrorKind::WouldBlock;
    let mut tcp = TcpStream::connect(("127.0.0.1", admin_port))?;
    let mut tls = rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap())
        .map_err(std::io::Error::other)?;
    plain.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut recorded = false;
    loop {
        let mut busy = false;
        match plain.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tls.writer().write_all(&buf[..n])?;
                busy = true;
            }
            Err(e) if e.kind() == WouldBlock => {}
            Err(e) => return Err(e),
        }
        while tls.wants_write() {
            match tls.write_tls(&mut tcp) {
                Ok(_) => busy = true,
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        match tls.read_tls(&mut tcp) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                tls.process_new_packets().map_err(std::io::Error::other)?;
                busy = true;
            }
            Err(e) if e.kind() == WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !recorded
            && !tls.is_handshaking()
            && let Some(v) = tls.protocol_version()
        {
            negotiated.lock().unwrap().push(v);
            recorded = true;
        }
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    write_all_nonblocking(&mut plain, &buf[..n])?;
                    busy = true;
                }
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn write_all_nonblocking(s: &mut TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
