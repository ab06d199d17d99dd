//! End-to-end tests on real quinn endpoints over 127.0.0.1.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use llmpack_frame::ModelId;
use quinn::{Connection, ConnectionError, Endpoint};

use crate::*;

const LOCAL: &str = "127.0.0.1:0";

fn identity(name: &str) -> Identity {
    let (cert, key) = generate(name).unwrap();
    Identity::from_pem(&cert, &key).unwrap()
}

fn model(id: u8, probe: u64) -> Option<ModelInfo> {
    Some(ModelInfo {
        id: ModelId([id; 32]),
        runtime: "onnxruntime 1.31.1".into(),
        probe,
    })
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test timed out")
}

/// Connects a client to a server; returns both ends' connection results.
async fn connect(
    auth: &ServerAuth,
    server_pin: CertificateDer<'static>,
    client_id: Option<Identity>,
) -> (
    Result<Connection, ConnectionError>,
    Result<Connection, ConnectionError>,
    Endpoint,
    Endpoint,
) {
    let tuning = Tuning::default();
    let server = server_endpoint(LOCAL.parse().unwrap(), auth, &tuning).unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let client = client_endpoint(LOCAL.parse().unwrap(), server_pin, client_id, &tuning).unwrap();
    let accept = async { server.accept().await.expect("endpoint open").await };
    let dial = async { client.connect(addr, SERVER_NAME).unwrap().await };
    let (s, c) = bounded(async { tokio::join!(accept, dial) }).await;
    (s, c, server, client)
}

/// Runs both handshakes on connected ends.
async fn handshake(
    s: &Connection,
    c: &Connection,
    policy: &ServerPolicy,
    hello: &Hello,
) -> (
    Result<Agreed, HandshakeError>,
    Result<Agreed, HandshakeError>,
) {
    bounded(async { tokio::join!(server_handshake(s, policy), client_handshake(c, hello)) }).await
}

fn pinned(server: &Identity, client: &Identity) -> ServerAuth {
    ServerAuth {
        identity: server.clone(),
        client_pin: Some(client.certificate().clone()),
    }
}

#[tokio::test]
async fn pinned_both_ways_connects_and_agrees() {
    let (sid, cid) = (identity("receiver"), identity("sender"));
    let (s, c, _se, _ce) = connect(&pinned(&sid, &cid), sid.certificate().clone(), Some(cid)).await;
    let (s, c) = (s.unwrap(), c.unwrap());
    let policy = ServerPolicy {
        token: None,
        model: model(1, 7),
    };
    let (sr, cr) = handshake(&s, &c, &policy, &Hello::new(None, model(1, 7))).await;
    assert_eq!(
        sr.unwrap(),
        Agreed {
            lm: true,
            peer_model: model(1, 7)
        }
    );
    assert_eq!(
        cr.unwrap(),
        Agreed {
            lm: true,
            peer_model: model(1, 7)
        }
    );
    // The link is usable after the handshake.
    let (mut tx, _rx) = c.open_bi().await.unwrap();
    tx.write_all(b"ping").await.unwrap();
    tx.finish().unwrap();
    let (_tx, mut rx) = bounded(s.accept_bi()).await.unwrap();
    assert_eq!(bounded(rx.read_to_end(16)).await.unwrap(), b"ping");
}

#[tokio::test]
async fn wrong_client_certificate_is_rejected() {
    let (sid, cid, other) = (
        identity("receiver"),
        identity("sender"),
        identity("intruder"),
    );
    let (s, c, _se, _ce) =
        connect(&pinned(&sid, &cid), sid.certificate().clone(), Some(other)).await;
    assert!(s.is_err(), "server accepted an unpinned client certificate");
    // In TLS 1.3 the client may finish before the server checks its
    // certificate; it must then find the connection closed.
    if let Ok(c) = c {
        let r = bounded(client_handshake(&c, &Hello::new(None, None))).await;
        assert!(matches!(r, Err(HandshakeError::Connection(_))), "{r:?}");
    }
}

#[tokio::test]
async fn missing_client_certificate_is_rejected() {
    let (sid, cid) = (identity("receiver"), identity("sender"));
    let (s, c, _se, _ce) = connect(&pinned(&sid, &cid), sid.certificate().clone(), None).await;
    assert!(s.is_err(), "server accepted a client without a certificate");
    if let Ok(c) = c {
        assert!(
            bounded(client_handshake(&c, &Hello::new(None, None)))
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn client_pinning_another_server_certificate_fails() {
    let (sid, cid, other) = (
        identity("receiver"),
        identity("sender"),
        identity("receiver"),
    );
    let (s, c, _se, _ce) =
        connect(&pinned(&sid, &cid), other.certificate().clone(), Some(cid)).await;
    let err = c.unwrap_err().to_string();
    assert!(err.contains(&sid.fingerprint()), "{err}");
    assert!(
        !err.contains(&other.fingerprint()),
        "the pinned certificate leaked: {err}"
    );
    let server_side = s.unwrap_err().to_string();
    assert!(
        !server_side.contains(&other.fingerprint()),
        "the close reason told the server what the client pins: {server_side}"
    );
}

fn token_mode(sid: &Identity) -> ServerAuth {
    ServerAuth {
        identity: sid.clone(),
        client_pin: None,
    }
}

#[tokio::test]
async fn token_mode_accepts_the_right_token() {
    let sid = identity("receiver");
    let (s, c, _se, _ce) = connect(&token_mode(&sid), sid.certificate().clone(), None).await;
    let (s, c) = (s.unwrap(), c.unwrap());
    let token = Secret::new(b"correct horse".to_vec()).unwrap();
    let policy = ServerPolicy {
        token: Some(token.clone()),
        model: None,
    };
    let (sr, cr) = handshake(&s, &c, &policy, &Hello::new(Some(token), model(1, 1))).await;
    assert_eq!(
        sr.unwrap(),
        Agreed {
            lm: false,
            peer_model: model(1, 1)
        }
    );
    assert_eq!(
        cr.unwrap(),
        Agreed {
            lm: false,
            peer_model: None
        }
    );
}

#[tokio::test]
async fn token_mode_rejects_a_wrong_or_missing_token() {
    let sid = identity("receiver");
    let policy = ServerPolicy {
        token: Some(Secret::new(b"correct horse".to_vec()).unwrap()),
        model: model(1, 1),
    };
    for token in [Some(Secret::new(b"battery staple".to_vec()).unwrap()), None] {
        let (s, c, _se, _ce) = connect(&token_mode(&sid), sid.certificate().clone(), None).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        let (sr, cr) = handshake(&s, &c, &policy, &Hello::new(token, model(1, 1))).await;
        assert!(matches!(sr, Err(HandshakeError::Unauthenticated)), "{sr:?}");
        assert!(matches!(cr, Err(HandshakeError::TokenRejected)), "{cr:?}");
        match c.close_reason() {
            Some(ConnectionError::ApplicationClosed(close)) => {
                assert_eq!(close.error_code, CLOSE_UNAUTHENTICATED);
                assert!(
                    close.reason.is_empty(),
                    "an unauthenticated peer got details"
                );
            }
            other => panic!("client connection not closed by the server: {other:?}"),
        }
    }
}

#[tokio::test]
async fn different_model_ids_are_refused_on_both_ends() {
    let (sid, cid) = (identity("receiver"), identity("sender"));
    let (s, c, _se, _ce) = connect(&pinned(&sid, &cid), sid.certificate().clone(), Some(cid)).await;
    let (s, c) = (s.unwrap(), c.unwrap());
    let policy = ServerPolicy {
        token: None,
        model: model(0xab, 7),
    };
    let (sr, cr) = handshake(&s, &c, &policy, &Hello::new(None, model(0xcd, 7))).await;
    let (Err(HandshakeError::Refused(sr)), Err(HandshakeError::Refused(cr))) = (sr, cr) else {
        panic!("both ends must refuse");
    };
    assert_eq!(sr, cr);
    assert!(
        sr.contains("abababababababab") && sr.contains("cdcdcdcdcdcdcdcd"),
        "{sr}"
    );
}

#[tokio::test]
async fn same_model_other_probe_comes_up_without_model_coding() {
    let (sid, cid) = (identity("receiver"), identity("sender"));
    let (s, c, _se, _ce) = connect(&pinned(&sid, &cid), sid.certificate().clone(), Some(cid)).await;
    let (s, c) = (s.unwrap(), c.unwrap());
    let policy = ServerPolicy {
        token: None,
        model: model(1, 7),
    };
    let (sr, cr) = handshake(&s, &c, &policy, &Hello::new(None, model(1, 8))).await;
    assert!(!sr.unwrap().lm);
    assert!(!cr.unwrap().lm);
}

#[tokio::test]
async fn other_protocol_version_is_refused() {
    let (sid, cid) = (identity("receiver"), identity("sender"));
    let (s, c, _se, _ce) = connect(&pinned(&sid, &cid), sid.certificate().clone(), Some(cid)).await;
    let (s, c) = (s.unwrap(), c.unwrap());
    let hello = Hello {
        version: PROTOCOL_VERSION + 1,
        ..Hello::new(None, None)
    };
    let (sr, cr) = handshake(&s, &c, &ServerPolicy::default(), &hello).await;
    let (Err(HandshakeError::Refused(sr)), Err(HandshakeError::Refused(cr))) = (sr, cr) else {
        panic!("both ends must refuse");
    };
    assert_eq!(sr, cr);
    let (theirs, ours) = (
        format!("v{}", PROTOCOL_VERSION + 1),
        format!("v{PROTOCOL_VERSION}"),
    );
    assert!(sr.contains(&theirs) && sr.contains(&ours), "{sr}");
}
