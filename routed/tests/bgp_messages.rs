//! Byte fixtures for every message Fjord sends and receives, both directions, and
//! malformed messages with the NOTIFICATION or RFC 7606 handling each must produce.

// In a module named `bgp` so that `cargo test -p fjord-routed bgp` selects these.
mod bgp {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use fjord_routed::bgp::error::AttrAction;
    use fjord_routed::bgp::fsm::{check_open, FsmConfig};
    use fjord_routed::bgp::wire::{
        decode, encode, Afi, Capabilities, Decoded, GracefulRestartCap, GracefulRestartFamily,
        Message, Notification, Open, Origin, Route, RouteRefresh, SessionContext, Update,
    };
    use fjord_routed::bgp::MessageError;

    const M: [u8; 16] = [0xff; 16];
    const CTX: SessionContext = SessionContext {
        four_octet_as: true,
        ibgp: true,
    };

    /// Marker + length + type + body.
    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = M.to_vec();
        v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        v.push(kind);
        v.extend_from_slice(body);
        v
    }

    /// An UPDATE body from its three sections.
    fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
        let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(withdrawn);
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(attrs);
        b.extend_from_slice(nlri);
        msg(2, &b)
    }

    const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
    const EMPTY_AS_PATH: [u8; 3] = [0x40, 2, 0];
    const NEXT_HOP_10_0_0_2: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 2];
    const LOCAL_PREF_100: [u8; 7] = [0x40, 5, 4, 0, 0, 0, 100];
    /// 10.244.1.0/26
    const NLRI_BLOCK: [u8; 5] = [26, 10, 244, 1, 0];

    fn attrs(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn plain_attrs() -> Vec<u8> {
        attrs(&[
            &ORIGIN_IGP,
            &EMPTY_AS_PATH,
            &NEXT_HOP_10_0_0_2,
            &LOCAL_PREF_100,
        ])
    }

    fn route(prefix: &str, next_hop: &str) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: next_hop.parse().unwrap(),
            origin: Origin::Igp,
            as_path: vec![],
            local_pref: Some(100),
            med: None,
        }
    }

    fn both_ways(bytes: &[u8], value: Message) {
        assert_eq!(
            encode(&value, CTX).unwrap().as_ref(),
            bytes,
            "encode {value:?}"
        );
        let d = decode(bytes, CTX).unwrap();
        assert_eq!(d.revised, None);
        assert_eq!(d.message, value, "decode");
    }

    fn fjord_open() -> (Vec<u8>, Open) {
        let body = [
            &[4u8, 0xfc, 0x00, 0, 30, 10, 0, 0, 1, 34][..],
            &[2, 32],                        // one Capabilities parameter, 32 octets
            &[1, 4, 0, 1, 0, 1],             // MP IPv4 unicast
            &[1, 4, 0, 2, 0, 1],             // MP IPv6 unicast
            &[2, 0],                         // route refresh
            &[64, 10, 0x00, 120],            // graceful restart, R=0, 120 s
            &[0, 1, 1, 0x80, 0, 2, 1, 0x80], // IPv4 and IPv6 with forwarding preserved
            &[65, 4, 0, 0, 0xfc, 0x00],      // 4-octet AS 64512
        ]
        .concat();
        let gr = GracefulRestartCap {
            restart_time: 120,
            restarting: false,
            families: vec![
                GracefulRestartFamily {
                    afi: Afi::Ipv4,
                    forwarding_preserved: true,
                },
                GracefulRestartFamily {
                    afi: Afi::Ipv6,
                    forwarding_preserved: true,
                },
            ],
        };
        let caps = Capabilities {
            four_octet_as: None,
            multiprotocol: vec![Afi::Ipv4, Afi::Ipv6],
            route_refresh: true,
            graceful_restart: Some(gr),
            other: vec![],
        };
        (
            msg(1, &body),
            Open::new(64512, 30, Ipv4Addr::new(10, 0, 0, 1), caps),
        )
    }

    fn fsm_config() -> FsmConfig {
        FsmConfig {
            local_asn: 64512,
            remote_asn: 64512,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            hold_time: 30,
            connect_retry: Duration::from_secs(1),
            passive: false,
            graceful_restart_time: Some(120),
        }
    }

    // ---- fixtures, both directions ----

    #[test]
    fn open_with_fjord_capabilities() {
        let (bytes, open) = fjord_open();
        assert_eq!(open, fsm_config_for_router(1).open());
        both_ways(&bytes, Message::Open(open));
    }

    fn fsm_config_for_router(last: u8) -> FsmConfig {
        FsmConfig {
            router_id: Ipv4Addr::new(10, 0, 0, last),
            ..fsm_config()
        }
    }

    #[test]
    fn open_with_as_above_65535_says_as_trans() {
        let open = Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::new(10, 0, 0, 1),
            Capabilities::default(),
        );
        let bytes = encode(&Message::Open(open.clone()), CTX).unwrap();
        assert_eq!(&bytes[20..22], &[0x5b, 0xa0]); // 23456
        assert_eq!(&bytes[29..], &[2, 6, 65, 4, 0xfa, 0x56, 0xea, 0x01]);
        let Message::Open(back) = decode(&bytes, CTX).unwrap().message else {
            panic!("not an OPEN")
        };
        assert_eq!(back.asn(), 4_200_000_001);
    }

    #[test]
    fn keepalive() {
        both_ways(&msg(4, &[]), Message::Keepalive);
    }

    #[test]
    fn notification_cease_administrative_shutdown() {
        let n = Notification {
            code: 6,
            subcode: 2,
            data: vec![],
        };
        both_ways(&msg(3, &[6, 2]), Message::Notification(n));
    }

    #[test]
    fn notification_with_data() {
        let n = Notification {
            code: 1,
            subcode: 2,
            data: vec![0x10, 0x01],
        };
        both_ways(&msg(3, &[1, 2, 0x10, 0x01]), Message::Notification(n));
    }

    #[test]
    fn route_refresh_ipv4_and_ipv6() {
        both_ways(
            &msg(5, &[0, 1, 0, 1]),
            Message::RouteRefresh(RouteRefresh::new(Afi::Ipv4)),
        );
        both_ways(
            &msg(5, &[0, 2, 0, 1]),
            Message::RouteRefresh(RouteRefresh::new(Afi::Ipv6)),
        );
    }

    #[test]
    fn end_of_rib_ipv4_is_an_empty_update() {
        let bytes = update(&[], &[], &[]);
        assert_eq!(bytes.len(), 23);
        both_ways(&bytes, Message::Update(Update::end_of_rib(Afi::Ipv4)));
    }

    #[test]
    fn end_of_rib_ipv6_is_an_empty_mp_unreach() {
        let bytes = update(&[], &[0x80, 15, 3, 0, 2, 1], &[]);
        both_ways(&bytes, Message::Update(Update::end_of_rib(Afi::Ipv6)));
    }

    /// The UPDATE bgp-rs 0.6.0 decoded as one route 0.0.0.0/1 with an ADD-PATH id
    /// (docs/decisions/0002-bgp-codec.md): a default route and a block, no ADD-PATH.
    #[test]
    fn regression_default_route_and_block_are_two_prefixes() {
        let bytes = update(&[], &plain_attrs(), &[0x00, 0x1a, 0x0a, 0xf4, 0x01, 0x00]);
        let d = decode(&bytes, CTX).unwrap();
        let Message::Update(u) = d.message else {
            panic!("not an UPDATE")
        };
        let prefixes: Vec<String> = u.announced.iter().map(|r| r.prefix.to_string()).collect();
        assert_eq!(prefixes, vec!["0.0.0.0/0", "10.244.1.0/26"]);
        assert_eq!(u.announced.len(), 2);
        assert!(u.withdrawn.is_empty());
        both_ways(
            &bytes,
            Message::Update(Update {
                announced: vec![
                    route("0.0.0.0/0", "10.0.0.2"),
                    route("10.244.1.0/26", "10.0.0.2"),
                ],
                ..Update::default()
            }),
        );
    }

    #[test]
    fn update_ipv4_with_as_path_and_med() {
        let attrs = attrs(&[
            &ORIGIN_IGP,
            &[0x40, 2, 10, 2, 2, 0, 0, 0xfc, 0x00, 0xfa, 0x56, 0xea, 0x01],
            &NEXT_HOP_10_0_0_2,
            &[0x80, 4, 4, 0, 0, 0, 7],
        ]);
        let bytes = update(&[], &attrs, &NLRI_BLOCK);
        let mut r = route("10.244.1.0/26", "10.0.0.2");
        r.as_path = vec![64512, 4_200_000_001];
        r.local_pref = None;
        r.med = Some(7);
        both_ways(
            &bytes,
            Message::Update(Update {
                announced: vec![r],
                ..Update::default()
            }),
        );
    }

    #[test]
    fn update_ipv4_withdrawal() {
        let bytes = update(&NLRI_BLOCK, &[], &[]);
        both_ways(
            &bytes,
            Message::Update(Update {
                withdrawn: vec!["10.244.1.0/26".parse().unwrap()],
                ..Update::default()
            }),
        );
    }

    const V6_BLOCK: [u8; 17] = [
        122, 0xfd, 0, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40,
    ];

    #[test]
    fn update_ipv6_in_mp_reach() {
        let mut mp = vec![0x80, 14, 38, 0, 2, 1, 16, 0xfd, 0];
        mp.extend_from_slice(&[0; 13]);
        mp.extend_from_slice(&[2, 0]); // next hop fd00::2, reserved
        mp.extend_from_slice(&V6_BLOCK);
        let bytes = update(
            &[],
            &attrs(&[&ORIGIN_IGP, &EMPTY_AS_PATH, &LOCAL_PREF_100, &mp]),
            &[],
        );
        both_ways(
            &bytes,
            Message::Update(Update {
                announced: vec![route("fd00:244::40/122", "fd00::2")],
                ..Update::default()
            }),
        );
    }

    #[test]
    fn update_ipv6_withdrawal_in_mp_unreach() {
        let mut mp = vec![0x80, 15, 20, 0, 2, 1];
        mp.extend_from_slice(&V6_BLOCK);
        both_ways(
            &update(&[], &mp, &[]),
            Message::Update(Update {
                withdrawn: vec!["fd00:244::40/122".parse().unwrap()],
                ..Update::default()
            }),
        );
    }

    // ---- malformed: exact NOTIFICATION or RFC 7606 handling ----

    fn error_of(bytes: &[u8]) -> (u8, u8, Vec<u8>) {
        let e = decode(bytes, CTX).expect_err("must be refused");
        let n = e.notification();
        (n.code, n.subcode, n.data)
    }

    fn code_of(bytes: &[u8]) -> (u8, u8) {
        let (c, s, _) = error_of(bytes);
        (c, s)
    }

    /// Decodes an UPDATE handled per RFC 7606; returns it, the action and (code, subcode).
    fn revised(bytes: &[u8]) -> (Update, AttrAction, (u8, u8)) {
        let Decoded { message, revised } = decode(bytes, CTX).expect("session survives");
        let Message::Update(u) = message else {
            panic!("not an UPDATE")
        };
        let r = revised.expect("an RFC 7606 outcome");
        let n = r.error.notification();
        (u, r.action, (n.code, n.subcode))
    }

    fn assert_withdrawn(bytes: &[u8], code: (u8, u8)) {
        let (u, action, c) = revised(bytes);
        assert_eq!(action, AttrAction::Withdraw);
        assert_eq!(c, code);
        assert!(u.announced.is_empty());
        assert_eq!(u.withdrawn, vec!["10.244.1.0/26".parse().unwrap()]);
    }

    #[test]
    fn bad_marker_is_connection_not_synchronized() {
        let mut b = msg(4, &[]);
        b[3] = 0;
        assert_eq!(code_of(&b), (1, 1));
    }

    #[test]
    fn length_above_4096_is_bad_message_length_with_the_length() {
        let mut b = msg(2, &[0; 10]);
        b[16..18].copy_from_slice(&4097u16.to_be_bytes());
        assert_eq!(error_of(&b), (1, 2, vec![0x10, 0x01]));
    }

    #[test]
    fn length_below_minimum_is_bad_message_length() {
        let mut b = msg(4, &[]);
        b[17] = 18;
        assert_eq!(error_of(&b[..18]), (1, 2, vec![0, 18]));
        // An OPEN shorter than 29 octets, and a KEEPALIVE longer than 19.
        assert_eq!(
            error_of(&msg(1, &[4, 0, 1, 0, 30, 1, 1, 1])),
            (1, 2, vec![0, 27])
        );
        assert_eq!(error_of(&msg(4, &[0])), (1, 2, vec![0, 20]));
        // A NOTIFICATION without its code and subcode.
        assert_eq!(code_of(&msg(3, &[6])), (1, 2));
    }

    #[test]
    fn unsupported_message_type() {
        assert_eq!(error_of(&msg(7, &[])), (1, 3, vec![7]));
    }

    #[test]
    fn unsupported_version_names_version_4() {
        let (mut b, _) = fjord_open();
        b[19] = 3;
        assert_eq!(error_of(&b), (2, 1, vec![0, 4]));
    }

    #[test]
    fn open_with_unsupported_optional_parameter() {
        // Optional parameter type 1 (authentication, deprecated by RFC 5492).
        let b = msg(1, &[4, 0xfc, 0, 0, 30, 10, 0, 0, 1, 4, 1, 2, 0, 0]);
        assert_eq!(code_of(&b), (2, 4));
    }

    fn open_checked(open: Open) -> Result<(), (u8, u8)> {
        // Through the wire first, as a received OPEN would be.
        let bytes = encode(&Message::Open(open), CTX).unwrap();
        let Message::Open(open) = decode(&bytes, CTX).unwrap().message else {
            panic!("not an OPEN")
        };
        check_open(&open, &fsm_config())
            .map(|_| ())
            .map_err(|e: MessageError| {
                let n = e.notification();
                (n.code, n.subcode)
            })
    }

    #[test]
    fn hold_time_one_or_two_is_unacceptable() {
        let (_, open) = fjord_open();
        for hold in [1, 2] {
            let o = Open {
                hold_time: hold,
                ..open.clone()
            };
            assert_eq!(open_checked(o), Err((2, 6)));
        }
        assert_eq!(
            open_checked(Open {
                hold_time: 3,
                ..open.clone()
            }),
            Ok(())
        );
        assert_eq!(
            open_checked(Open {
                hold_time: 0,
                ..open
            }),
            Ok(())
        );
    }

    #[test]
    fn bad_peer_as() {
        let (_, mut open) = fjord_open();
        open.capabilities.four_octet_as = Some(64513);
        open.my_as = 64513;
        assert_eq!(open_checked(open), Err((2, 2)));
    }

    #[test]
    fn bad_bgp_identifier_zero_or_ours() {
        let (_, open) = fjord_open();
        let zero = Open {
            router_id: Ipv4Addr::UNSPECIFIED,
            ..open.clone()
        };
        assert_eq!(open_checked(zero), Err((2, 3)));
        let ours = Open {
            router_id: fsm_config().router_id,
            ..open
        };
        assert_eq!(open_checked(ours), Err((2, 3)));
    }

    #[test]
    fn unknown_well_known_attribute_is_treat_as_withdraw_3_2() {
        let a = attrs(&[&plain_attrs(), &[0x40, 99, 1, 0]]);
        assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 2));
    }

    #[test]
    fn malformed_as_path_is_treat_as_withdraw_3_11() {
        // AS_SEQUENCE claiming two 4-octet ASes with four octets present.
        let a = attrs(&[
            &ORIGIN_IGP,
            &[0x40, 2, 6, 2, 2, 0, 0, 0xfc, 0],
            &NEXT_HOP_10_0_0_2,
            &LOCAL_PREF_100,
        ]);
        assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 11));
    }

    #[test]
    fn bad_next_hop_is_treat_as_withdraw_3_8() {
        for nh in [[0, 0, 0, 0], [127, 0, 0, 1], [224, 0, 0, 1]] {
            let a = attrs(&[
                &ORIGIN_IGP,
                &EMPTY_AS_PATH,
                &[0x40, 3, 4, nh[0], nh[1], nh[2], nh[3]],
                &LOCAL_PREF_100,
            ]);
            assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 8));
        }
    }

    #[test]
    fn truncated_nlri_is_invalid_network_field_and_resets() {
        // A /26 needs four address octets; two follow.
        let b = update(&[], &plain_attrs(), &[26, 10, 244]);
        assert_eq!(code_of(&b), (3, 10));
        // A prefix length beyond 32.
        assert_eq!(
            code_of(&update(&[], &plain_attrs(), &[33, 10, 0, 0, 0, 0])),
            (3, 10)
        );
    }

    #[test]
    fn attribute_length_mismatch() {
        // ORIGIN with two octets: Attribute Length Error, treat-as-withdraw (RFC 7606 7.1).
        let a = attrs(&[&[0x40, 1, 2, 0, 0], &EMPTY_AS_PATH, &NEXT_HOP_10_0_0_2]);
        assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 5));
        // Total path attribute length beyond the message: Malformed Attribute List, reset.
        let mut b = update(&[], &plain_attrs(), &NLRI_BLOCK);
        b[22] = 0xff;
        assert_eq!(code_of(&b), (3, 1));
    }

    #[test]
    fn missing_well_known_attribute_is_treat_as_withdraw_3_3() {
        let a = attrs(&[&EMPTY_AS_PATH, &NEXT_HOP_10_0_0_2, &LOCAL_PREF_100]);
        let b = update(&[], &a, &NLRI_BLOCK);
        assert_withdrawn(&b, (3, 3));
        let (_, _, data) = decode(&b, CTX)
            .unwrap()
            .revised
            .unwrap()
            .error
            .notification()
            .into_parts();
        assert_eq!(data, vec![1]); // ORIGIN
    }

    trait Parts {
        fn into_parts(self) -> (u8, u8, Vec<u8>);
    }

    impl Parts for Notification {
        fn into_parts(self) -> (u8, u8, Vec<u8>) {
            (self.code, self.subcode, self.data)
        }
    }

    #[test]
    fn missing_next_hop_on_ibgp_is_treat_as_withdraw_3_3() {
        let a = attrs(&[&ORIGIN_IGP, &EMPTY_AS_PATH, &LOCAL_PREF_100]);
        assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 3));
    }

    #[test]
    fn bad_origin_value_is_treat_as_withdraw_3_6() {
        let a = attrs(&[&[0x40, 1, 1, 5], &EMPTY_AS_PATH, &NEXT_HOP_10_0_0_2]);
        assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 6));
    }

    #[test]
    fn attribute_flags_error_is_treat_as_withdraw_3_4() {
        // ORIGIN marked optional transitive.
        let a = attrs(&[&[0xc0, 1, 1, 0], &EMPTY_AS_PATH, &NEXT_HOP_10_0_0_2]);
        assert_withdrawn(&update(&[], &a, &NLRI_BLOCK), (3, 4));
    }

    #[test]
    fn duplicate_attribute_keeps_the_first_and_the_routes() {
        let a = attrs(&[&plain_attrs(), &[0x40, 1, 1, 2]]);
        let (u, action, code) = revised(&update(&[], &a, &NLRI_BLOCK));
        assert_eq!(action, AttrAction::Discard);
        assert_eq!(code, (3, 1));
        assert_eq!(u.announced, vec![route("10.244.1.0/26", "10.0.0.2")]);
    }

    #[test]
    fn duplicate_mp_reach_resets_the_session() {
        let mut mp = vec![0x80, 14, 21, 0, 2, 1, 16, 0xfd];
        mp.extend_from_slice(&[0; 14]);
        mp.extend_from_slice(&[2, 0]); // next hop fd00::2, reserved, no NLRI
        let a = attrs(&[&ORIGIN_IGP, &EMPTY_AS_PATH, &mp, &mp]);
        assert_eq!(code_of(&update(&[], &a, &[])), (3, 1));
    }

    #[test]
    fn nothing_panics_on_mutated_messages() {
        let (open, _) = fjord_open();
        let seeds = [
            open,
            update(&[], &plain_attrs(), &NLRI_BLOCK),
            update(&NLRI_BLOCK, &[0x80, 15, 20, 0, 2, 1], &V6_BLOCK),
            msg(5, &[0, 1, 0, 1]),
            msg(3, &[6, 2, 1, 2, 3]),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut decoded = 0;
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let pos = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[pos] = next() as u8,
                    1 => b.truncate(pos.max(1)),
                    _ => b[pos] ^= 1 << (next() % 8),
                }
            }
            if decode(&b, CTX).is_ok() {
                decoded += 1;
            }
        }
        // Some mutations stay valid (a flipped prefix bit), most do not.
        assert!(decoded > 0 && decoded < 20_000, "{decoded}");
    }
}
