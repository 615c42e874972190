//! Templates and the pure function that turns a [`SeedInput`] into the three NoCloud documents.
//!
//! The YAML templates are parsed once, at load time, into values. A string scalar that is
//! exactly `$name` is a placeholder: [`seed_documents`] replaces the whole scalar with a value
//! (a string, a number or a list), so no user text is ever spliced into YAML text. The HTML
//! page uses `{{name}}` placeholders in text, and every value is HTML-escaped.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::keys::parse_public_key;
use super::names::{
    validate_domain, validate_hostname, validate_instance_id, validate_slug, validate_username,
};
use super::yaml::to_cloud_yaml;
use super::{CloudInitError, Seed, SeedInput};

/// File names inside a template directory (the repository's `cloud-init/`).
pub const USER_DATA_FILE: &str = "user-data.yaml";
pub const NETWORK_CONFIG_FILE: &str = "network-config.yaml";
pub const INDEX_HTML_FILE: &str = "index.html";

/// The first line cloud-init requires of a cloud-config user-data document.
const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

const USER_DATA_PLACEHOLDERS: &[&str] = &[
    "instance_id",
    "hostname",
    "username",
    "ssh_authorized_keys",
    "index_html",
    "slug",
    "domain",
    "ssh_port",
    "gateway",
    "nginx_realip",
    "resolv_conf",
];
const NETWORK_PLACEHOLDERS: &[&str] = &["mac", "ip", "prefix_len", "address", "gateway", "dns"];
const HTML_PLACEHOLDERS: &[&str] = &["slug", "domain", "ssh_port", "username", "hostname"];

/// The parsed, checked templates. Cheap to clone; share one per daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    user_data: Value,
    network_config: Value,
    index_html: String,
}

impl Templates {
    /// Loads and checks `user-data.yaml`, `network-config.yaml` and `index.html` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CloudInitError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| CloudInitError::ReadTemplate { path, source })
        };
        Self::from_texts(
            &read(USER_DATA_FILE)?,
            &read(NETWORK_CONFIG_FILE)?,
            read(INDEX_HTML_FILE)?,
        )
    }

    /// The templates shipped in the binary (the repository's `cloud-init/` at build time).
    pub fn embedded() -> Result<Self, CloudInitError> {
        Self::from_texts(
            include_str!("../../cloud-init/user-data.yaml"),
            include_str!("../../cloud-init/network-config.yaml"),
            include_str!("../../cloud-init/index.html").to_owned(),
        )
    }

    /// Parses and checks the three template texts.
    pub fn from_texts(
        user_data: &str,
        network_config: &str,
        index_html: String,
    ) -> Result<Self, CloudInitError> {
        if !user_data.starts_with(CLOUD_CONFIG_HEADER) {
            return Err(shape(USER_DATA_FILE, "must start with #cloud-config"));
        }
        let user_data = parse_template(USER_DATA_FILE, user_data, USER_DATA_PLACEHOLDERS)?;
        let network_config =
            parse_template(NETWORK_CONFIG_FILE, network_config, NETWORK_PLACEHOLDERS)?;
        if network_config.get("version").and_then(Value::as_u64) != Some(2) {
            return Err(shape(NETWORK_CONFIG_FILE, "must say version: 2"));
        }
        check_html(&index_html)?;
        Ok(Self {
            user_data,
            network_config,
            index_html,
        })
    }
}

fn shape(name: &'static str, reason: &str) -> CloudInitError {
    CloudInitError::TemplateShape {
        name,
        reason: reason.to_owned(),
    }
}

fn parse_template(name: &'static str, text: &str, known: &[&str]) -> Result<Value, CloudInitError> {
    let value: Value = serde_yaml::from_str(text)
        .map_err(|source| CloudInitError::TemplateYaml { name, source })?;
    if !value.is_mapping() {
        return Err(shape(name, "the document must be a mapping"));
    }
    check_node(name, &value, known)?;
    Ok(value)
}

/// Refuses YAML tags (`!foo`) and unknown placeholders anywhere in a template.
fn check_node(name: &'static str, v: &Value, known: &[&str]) -> Result<(), CloudInitError> {
    match v {
        Value::Tagged(_) => Err(shape(name, "YAML tags are not supported")),
        Value::String(s) => match placeholder_name(s) {
            Some(p) if !known.contains(&p) => Err(CloudInitError::UnknownPlaceholder {
                name,
                placeholder: s.clone(),
            }),
            _ => Ok(()),
        },
        Value::Sequence(items) => items.iter().try_for_each(|i| check_node(name, i, known)),
        Value::Mapping(m) => m.iter().try_for_each(|(k, v)| {
            if k.as_str().and_then(placeholder_name).is_some() || matches!(k, Value::Tagged(_)) {
                return Err(shape(name, "placeholders are only allowed as values"));
            }
            check_node(name, v, known)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// `$name` (lower-case letters and `_`) names a placeholder; any other string is literal.
fn placeholder_name(s: &str) -> Option<&str> {
    let name = s.strip_prefix('$')?;
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    ok.then_some(name)
}

/// Replaces every placeholder scalar with its value. Values are never scanned again.
fn fill(v: &Value, vars: &BTreeMap<&str, Value>) -> Value {
    match v {
        Value::String(s) => match placeholder_name(s).and_then(|p| vars.get(p)) {
            Some(value) => value.clone(),
            None => v.clone(),
        },
        Value::Sequence(items) => Value::Sequence(items.iter().map(|i| fill(i, vars)).collect()),
        Value::Mapping(m) => {
            Value::Mapping(m.iter().map(|(k, v)| (k.clone(), fill(v, vars))).collect())
        }
        other => other.clone(),
    }
}

/// Checks that every `{{name}}` in the page is known.
fn check_html(html: &str) -> Result<(), CloudInitError> {
    let dummy: BTreeMap<&str, String> = HTML_PLACEHOLDERS
        .iter()
        .map(|p| (*p, String::new()))
        .collect();
    render_html(html, &dummy).map(|_| ())
}

/// Replaces `{{name}}` with the HTML-escaped value, in one pass (a value that contains
/// `{{...}}` is not expanded again).
fn render_html(html: &str, vars: &BTreeMap<&str, String>) -> Result<String, CloudInitError> {
    let mut out = String::with_capacity(html.len() + 64);
    let mut rest = html;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(shape(INDEX_HTML_FILE, "unclosed {{"));
        };
        let name = after[..end].trim();
        let Some(value) = vars.get(name) else {
            return Err(CloudInitError::UnknownPlaceholder {
                name: INDEX_HTML_FILE,
                placeholder: format!("{{{{{name}}}}}"),
            });
        };
        out.push_str(&html_escape(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn invalid(field: &'static str, reason: &'static str) -> CloudInitError {
    CloudInitError::InvalidInput { field, reason }
}

/// Checks the addressing: a usable host address, in the gateway's subnet, and a unicast MAC.
fn validate_network(input: &SeedInput) -> Result<(), CloudInitError> {
    if !(8..=30).contains(&input.prefix_len) {
        return Err(invalid("prefix length", "must be 8 to 30"));
    }
    let mask = u32::MAX << (32 - u32::from(input.prefix_len));
    let ip = u32::from(input.ip);
    let gw = u32::from(input.gateway);
    if ip & mask != gw & mask {
        return Err(invalid("ip", "is not in the gateway's subnet"));
    }
    if ip == gw {
        return Err(invalid("ip", "is the gateway's address"));
    }
    if ip & !mask == 0 || ip & !mask == !mask {
        return Err(invalid(
            "ip",
            "is the subnet's network or broadcast address",
        ));
    }
    if input.mac[0] & 1 == 1 || input.mac == [0; 6] {
        return Err(invalid("mac", "must be a unicast address"));
    }
    Ok(())
}

/// Builds `meta-data`, `user-data` and `network-config` for one hosting.
///
/// Every input is validated first; a bad value is an [`CloudInitError::InvalidInput`] or a
/// key error, never a malformed document.
pub fn seed_documents(t: &Templates, input: &SeedInput) -> Result<Seed, CloudInitError> {
    validate_instance_id(&input.instance_id)?;
    validate_hostname(&input.hostname)?;
    validate_username(&input.username)?;
    validate_slug(&input.slug)?;
    validate_domain(&input.domain)?;
    validate_network(input)?;
    if input.ssh_authorized_keys.is_empty() {
        return Err(invalid("ssh keys", "at least one key is required"));
    }
    let keys = input
        .ssh_authorized_keys
        .iter()
        .map(|k| parse_public_key(k).map(|k| Value::String(k.openssh)))
        .collect::<Result<Vec<_>, _>>()?;

    let str_val = |s: &str| Value::String(s.to_owned());
    let html_vars: BTreeMap<&str, String> = [
        ("slug", input.slug.clone()),
        ("domain", input.domain.clone()),
        ("ssh_port", input.ssh_port.to_string()),
        ("username", input.username.clone()),
        ("hostname", input.hostname.clone()),
    ]
    .into_iter()
    .collect();
    let index_html = render_html(&t.index_html, &html_vars)?;

    let user_vars: BTreeMap<&str, Value> = [
        ("instance_id", str_val(&input.instance_id)),
        ("hostname", str_val(&input.hostname)),
        ("username", str_val(&input.username)),
        ("ssh_authorized_keys", Value::Sequence(keys)),
        ("index_html", Value::String(index_html)),
        ("slug", str_val(&input.slug)),
        ("domain", str_val(&input.domain)),
        ("ssh_port", Value::Number(input.ssh_port.into())),
        ("gateway", str_val(&input.gateway.to_string())),
        ("nginx_realip", Value::String(nginx_realip(input.gateway))),
        ("resolv_conf", Value::String(resolv_conf(&input.dns))),
    ]
    .into_iter()
    .collect();
    let mut user_data = fill(&t.user_data, &user_vars);
    if input.install_nginx {
        add_package(&mut user_data, "nginx")?;
    }
    if let Some(hash) = &input.console_password_hash {
        set_console_password(&mut user_data, &input.username, hash)?;
    }

    let net_vars: BTreeMap<&str, Value> = [
        ("mac", Value::String(format_mac(&input.mac))),
        ("ip", Value::String(input.ip.to_string())),
        ("prefix_len", Value::Number(input.prefix_len.into())),
        (
            "address",
            Value::String(format!("{}/{}", input.ip, input.prefix_len)),
        ),
        ("gateway", Value::String(input.gateway.to_string())),
        (
            "dns",
            Value::Sequence(
                input
                    .dns
                    .iter()
                    .map(|d: &Ipv4Addr| Value::String(d.to_string()))
                    .collect(),
            ),
        ),
    ]
    .into_iter()
    .collect();
    let network_config = fill(&t.network_config, &net_vars);

    let mut meta = Mapping::new();
    meta.insert(str_val("instance-id"), str_val(&input.instance_id));
    meta.insert(str_val("local-hostname"), str_val(&input.hostname));

    Ok(Seed {
        meta_data: to_cloud_yaml(&Value::Mapping(meta))?,
        user_data: format!("{CLOUD_CONFIG_HEADER}\n{}", to_cloud_yaml(&user_data)?),
        network_config: to_cloud_yaml(&network_config)?,
    })
}

/// nginx's configuration for visitors' addresses: requests come through roost's proxy on
/// the gateway, which sets `X-Real-IP` to the visitor; only the gateway is trusted with it,
/// so a visitor's own header changes nothing.
fn nginx_realip(gateway: Ipv4Addr) -> String {
    format!(
        "# Written by roost: the visitor's address, as roost's proxy on the gateway tells it.\n\
         set_real_ip_from {gateway};\n\
         real_ip_header X-Real-IP;\n"
    )
}

/// `/etc/resolv.conf` naming the VM's resolvers: ifupdown without `resolvconf` (the roost
/// image) does nothing with the network config's `dns-nameservers`.
fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    let mut s = String::from("# Written by roost (cloud-init) at the first boot.\n");
    for d in dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

/// Appends `name` to the top-level `packages` list (creating it), unless already there.
/// Gives the owner's entry in `users` a password hash and unlocks it. SSH still refuses
/// passwords (`ssh_pwauth: false`), so the password works on the serial console only.
fn set_console_password(
    user_data: &mut Value,
    username: &str,
    hash: &str,
) -> Result<(), CloudInitError> {
    let crypt = hash.starts_with('$')
        && hash.len() <= 256
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"$./=".contains(&b));
    if !crypt {
        return Err(invalid("console password", "must be a crypt(3) hash"));
    }
    let users = user_data
        .get_mut("users")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| shape(USER_DATA_FILE, "users must be a list"))?;
    let owner = users
        .iter_mut()
        .filter_map(Value::as_mapping_mut)
        .find(|u| u.get("name").and_then(Value::as_str) == Some(username))
        .ok_or_else(|| shape(USER_DATA_FILE, "users must list $username"))?;
    owner.insert("lock_passwd".into(), Value::Bool(false));
    owner.insert("passwd".into(), Value::String(hash.to_owned()));
    Ok(())
}

fn add_package(user_data: &mut Value, name: &str) -> Result<(), CloudInitError> {
    let Some(map) = user_data.as_mapping_mut() else {
        return Err(shape(USER_DATA_FILE, "the document must be a mapping"));
    };
    let entry = map
        .entry(Value::String("packages".into()))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Some(list) = entry.as_sequence_mut() else {
        return Err(shape(USER_DATA_FILE, "packages must be a list"));
    };
    if !list.iter().any(|p| p.as_str() == Some(name)) {
        list.push(Value::String(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
