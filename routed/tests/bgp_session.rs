//! Two real speakers over loopback: each test uses its own 127.0.x.0/24 addresses so
//! the tests run in parallel. Every wait is bounded.

// In a module named `bgp` so that `cargo test -p fjord-routed bgp` selects these.
mod bgp {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use fjord_routed::bgp::wire::{self, Capabilities, Message, Open, SessionContext};
    use fjord_routed::bgp::{
        spawn_peer, Afi, Listener, Origin, PeerCommand, PeerConfig, PeerEvent, PeerHandle, Peers,
        Route, SessionState,
    };
    use ipnetwork::IpNetwork;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(15);

    struct Speaker {
        events: mpsc::Receiver<PeerEvent>,
        peer: PeerHandle,
        listener: Option<Listener>,
        peers: Peers,
        task: Option<JoinHandle<()>>,
    }

    impl Speaker {
        fn serve(&mut self) {
            if let Some(l) = self.listener.take() {
                self.task = Some(tokio::spawn(l.run(self.peers.clone())));
            }
        }

        /// Waits for the first event `f` accepts, dropping the others.
        async fn wait<T>(&mut self, what: &str, mut f: impl FnMut(&PeerEvent) -> Option<T>) -> T {
            let fut = async {
                loop {
                    let e = self.events.recv().await.expect("session task ended");
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
            };
            timeout(WAIT, fut)
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        }

        async fn established(&mut self) -> Vec<Afi> {
            self.wait("Established", |e| match e {
                PeerEvent::Established { families, .. } => Some(families.clone()),
                _ => None,
            })
            .await
        }

        /// Collects announced routes until End-of-RIB has come for both families.
        async fn initial_routes(&mut self) -> Vec<Route> {
            let mut routes = Vec::new();
            let mut eor = Vec::new();
            while eor.len() < 2 {
                let e = self.wait("routes and End-of-RIB", |e| match e {
                    PeerEvent::Update { .. } | PeerEvent::EndOfRib { .. } => Some(e.clone()),
                    _ => None,
                });
                match e.await {
                    PeerEvent::Update { announced, .. } => routes.extend(announced),
                    PeerEvent::EndOfRib { afi, .. } => eor.push(afi),
                    _ => unreachable!(),
                }
            }
            routes.sort_by_key(|r| r.prefix);
            routes
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(local: &str, remote: &str, port: u16, router_id: u8) -> PeerConfig {
        PeerConfig {
            port,
            local_address: Some(ip(local)),
            hold_time: 9,
            connect_retry: Duration::from_secs(1),
            graceful_restart_time: Some(120),
            ..PeerConfig::new(ip(remote), 64512, 64512, Ipv4Addr::new(10, 0, 0, router_id))
        }
    }

    async fn speaker(local: &str, remote: &str, port: u16, router_id: u8) -> Speaker {
        let listener = Listener::bind(SocketAddr::new(ip(local), port))
            .await
            .unwrap();
        let (tx, events) = mpsc::channel(1024);
        let peers = Peers::new();
        let peer = spawn_peer(config(local, remote, port, router_id), tx);
        peers.insert(peer.clone());
        Speaker {
            events,
            peer,
            listener: Some(listener),
            peers,
            task: None,
        }
    }

    /// A listener on `a`, a free port, and the same port on `b`.
    async fn pair(a: &str, b: &str) -> (Speaker, Speaker) {
        let probe = Listener::bind(SocketAddr::new(ip(a), 0)).await.unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut x = speaker(a, b, port, 1).await;
        let mut y = speaker(b, a, port, 2).await;
        x.serve();
        y.serve();
        (x, y)
    }

    fn block(prefix: &str, next_hop: &str) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: ip(next_hop),
            origin: Origin::Igp,
            as_path: vec![],
            local_pref: Some(100),
            med: None,
        }
    }

    #[tokio::test]
    async fn speakers_exchange_ipv4_and_ipv6_routes_and_withdraw() {
        let (mut a, mut b) = pair("127.0.1.1", "127.0.1.2").await;
        let v4 = block("10.244.1.0/26", "10.0.1.1");
        let v6 = block("fd00:244::40/122", "fd00::1");
        a.peer
            .send(PeerCommand::Announce(vec![v4.clone(), v6.clone()]))
            .await
            .unwrap();
        assert_eq!(a.established().await, vec![Afi::Ipv4, Afi::Ipv6]);
        assert_eq!(b.established().await, vec![Afi::Ipv4, Afi::Ipv6]);
        assert_eq!(b.initial_routes().await, vec![v4.clone(), v6.clone()]);
        assert!(a.initial_routes().await.is_empty());

        // Announced after Established: sent at once.
        let later = block("10.244.2.0/26", "10.0.1.1");
        a.peer
            .send(PeerCommand::Announce(vec![later.clone()]))
            .await
            .unwrap();
        let got = b
            .wait("later route", |e| match e {
                PeerEvent::Update { announced, .. } if !announced.is_empty() => {
                    Some(announced.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(got, vec![later]);

        let gone: Vec<IpNetwork> = vec![v4.prefix, v6.prefix];
        a.peer
            .send(PeerCommand::Withdraw(gone.clone()))
            .await
            .unwrap();
        let mut withdrawn = Vec::new();
        while withdrawn.len() < 2 {
            let w = b
                .wait("withdrawal", |e| match e {
                    PeerEvent::Update { withdrawn, .. } if !withdrawn.is_empty() => {
                        Some(withdrawn.clone())
                    }
                    _ => None,
                })
                .await;
            withdrawn.extend(w);
        }
        withdrawn.sort();
        assert_eq!(withdrawn, gone);
    }

    #[tokio::test]
    async fn route_refresh_resends_the_adj_rib_out() {
        let (a, mut b) = pair("127.0.2.1", "127.0.2.2").await;
        let v4 = block("10.244.9.0/26", "10.0.2.1");
        a.peer
            .send(PeerCommand::Announce(vec![v4.clone()]))
            .await
            .unwrap();
        b.established().await;
        assert_eq!(b.initial_routes().await, vec![v4.clone()]);
        b.peer.send(PeerCommand::RouteRefresh).await.unwrap();
        let again = b
            .wait("refreshed route", |e| match e {
                PeerEvent::Update { announced, .. } if !announced.is_empty() => {
                    Some(announced.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(again, vec![v4]);
    }

    #[tokio::test]
    async fn stopped_peer_yields_down_on_both_sides() {
        let (mut a, mut b) = pair("127.0.3.1", "127.0.3.2").await;
        a.established().await;
        b.established().await;
        a.peer.send(PeerCommand::Stop).await.unwrap();
        let (reason, graceful) = b
            .wait("Down", |e| match e {
                PeerEvent::Down {
                    reason,
                    graceful,
                    peer,
                } => {
                    assert_eq!(*peer, ip("127.0.3.1"));
                    Some((reason.clone(), *graceful))
                }
                _ => None,
            })
            .await;
        assert!(!graceful, "a NOTIFICATION is not a restart");
        assert!(reason.contains("administrative shutdown"), "{reason}");
        let reason = a
            .wait("local Down", |e| match e {
                PeerEvent::Down { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert_eq!(reason, "stopped");
    }

    #[tokio::test]
    async fn unconfigured_address_is_refused_with_cease_5() {
        let mut a = speaker("127.0.4.1", "127.0.4.2", 0, 1).await;
        let addr = a.listener.as_ref().unwrap().local_addr().unwrap();
        a.serve();
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip("127.0.4.9"), 0)).unwrap();
        let mut stream = timeout(WAIT, socket.connect(addr)).await.unwrap().unwrap();
        let open = Open::new(
            64512,
            30,
            Ipv4Addr::new(10, 0, 0, 9),
            Capabilities::default(),
        );
        let bytes = wire::encode(&Message::Open(open), SessionContext::default()).unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut reply = Vec::new();
        timeout(WAIT, stream.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let Message::Notification(n) = wire::decode(&reply, SessionContext::default())
            .unwrap()
            .message
        else {
            panic!("expected a NOTIFICATION, got {reply:?}");
        };
        assert_eq!((n.code, n.subcode), (6, 5));
    }

    /// Both sides connect before either accepts (the listeners start late, so both TCP
    /// connections exist), which forces RFC 4271 6.8 collision detection.
    #[tokio::test]
    async fn collision_resolves_to_one_session() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .try_init();
        let probe = Listener::bind(SocketAddr::new(ip("127.0.5.1"), 0))
            .await
            .unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut a = speaker("127.0.5.1", "127.0.5.2", port, 1).await;
        let mut b = speaker("127.0.5.2", "127.0.5.1", port, 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.serve();
        b.serve();
        a.established().await;
        b.established().await;
        // One session: no second Established and no Down for a few seconds.
        let quiet = timeout(Duration::from_secs(3), async {
        loop {
            tokio::select! {
                Some(e) = a.events.recv() => if matches!(e, PeerEvent::Established { .. } | PeerEvent::Down { .. }) { return e },
                Some(e) = b.events.recv() => if matches!(e, PeerEvent::Established { .. } | PeerEvent::Down { .. }) { return e },
            }
        }
    })
    .await;
        assert!(quiet.is_err(), "session flapped: {quiet:?}");
        // And it works.
        let v4 = block("10.244.5.0/26", "10.0.5.1");
        a.peer
            .send(PeerCommand::Announce(vec![v4.clone()]))
            .await
            .unwrap();
        let got = b
            .wait("route after collision", |e| match e {
                PeerEvent::Update { announced, .. } if !announced.is_empty() => {
                    Some(announced.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(got, vec![v4]);
    }

    #[tokio::test]
    async fn state_changes_are_reported_up_to_established() {
        let (mut a, _b) = pair("127.0.6.1", "127.0.6.2").await;
        let mut seen = Vec::new();
        a.wait("Established state", |e| match e {
            PeerEvent::StateChanged { state, .. } => {
                seen.push(*state);
                (*state == SessionState::Established).then_some(())
            }
            _ => None,
        })
        .await;
        assert_eq!(seen.first(), Some(&SessionState::Connect));
        assert!(seen.contains(&SessionState::OpenConfirm), "{seen:?}");
    }
}
