//! Command line, environment and working directory.

use berth_api::v1;

use crate::ImageConfig;
use crate::error::{Result, SpecError};

/// containerd's `defaultUnixEnv`, applied by `oci.WithDefaultPathEnv`.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process arguments, following containerd's `WithProcessArgs` (which
/// copies Docker's rules, which Kubernetes documents for `command`/`args`):
///
/// | CRI command | CRI args | result                       |
/// |-------------|----------|------------------------------|
/// | —           | —        | image Entrypoint + image Cmd |
/// | —           | set      | image Entrypoint + CRI args  |
/// | set         | —        | CRI command (image Cmd dropped) |
/// | set         | set      | CRI command + CRI args       |
///
/// An image Entrypoint of exactly `[""]` means "no entrypoint" (Docker's
/// `ENTRYPOINT [""]` reset). An empty result is an error.
pub fn args(config: &v1::ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    if command.is_empty() && args.is_empty() {
        return Err(SpecError::invalid(
            "command",
            "no command specified: neither the container config nor the image has one",
        ));
    }
    command.extend(args);
    Ok(command)
}

/// containerd's `replaceOrAppendEnvValues`: later values replace earlier ones
/// of the same key in place (the first position is kept); an entry without
/// `=` removes the key.
pub fn merge_env(base: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    for value in overrides {
        let (key, has_eq) = match value.split_once('=') {
            Some((k, _)) => (k.to_string(), true),
            None => (value.clone(), false),
        };
        let pos = base
            .iter()
            .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
        match (pos, has_eq) {
            (Some(i), true) => base[i] = value,
            (None, true) => base.push(value),
            (Some(i), false) => {
                base.remove(i);
            }
            (None, false) => {}
        }
    }
}

/// The environment in containerd's order (`buildLinuxSpec`): the default
/// PATH, `HOSTNAME`, the image's env, then the CRI envs overriding by key.
/// `HOME` from the image's passwd is added last when nothing set it (runc and
/// libcontainer do the same at exec time; doing it here makes it visible in
/// the spec and to exec'd processes).
pub fn env(
    config: &v1::ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
    home: Option<&str>,
) -> Result<Vec<String>> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    merge_env(&mut env, [format!("HOSTNAME={hostname}")]);
    merge_env(&mut env, image.env.iter().cloned());
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(SpecError::invalid(
                format!("envs[{i}].key"),
                format!("{:?} is not a valid variable name", kv.key),
            ));
        }
    }
    merge_env(
        &mut env,
        config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value))),
    );
    if let Some(home) = home
        && !env.iter().any(|e| e.starts_with("HOME="))
    {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// The working directory: the CRI's, else the image's `WorkingDir`, else `/`.
/// It must be absolute (runc and libcontainer refuse anything else).
pub fn cwd(config: &v1::ContainerConfig, image: &ImageConfig) -> Result<String> {
    let (dir, field) = if !config.working_dir.is_empty() {
        (config.working_dir.as_str(), "working_dir")
    } else if !image.working_dir.is_empty() {
        (image.working_dir.as_str(), "image config WorkingDir")
    } else {
        ("/", "working_dir")
    };
    if !dir.starts_with('/') {
        return Err(SpecError::invalid(
            field,
            format!("{dir:?} is not an absolute path"),
        ));
    }
    Ok(dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn cfg(command: &[&str], args: &[&str]) -> v1::ContainerConfig {
        v1::ContainerConfig {
            command: s(command),
            args: s(args),
            ..Default::default()
        }
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: s(entrypoint),
            cmd: s(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn command_args_matrix() {
        // (CRI command, CRI args, image Entrypoint, image Cmd, expected)
        type Row<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let table: &[Row] = &[
            (&[], &[], &["/ep"], &["c1", "c2"], &["/ep", "c1", "c2"]),
            (
                &[],
                &[],
                &[],
                &["/bin/sh", "-c", "x"],
                &["/bin/sh", "-c", "x"],
            ),
            (&[], &[], &["/ep"], &[], &["/ep"]),
            (&[], &["a1"], &["/ep"], &["c1"], &["/ep", "a1"]),
            (&[], &["a1"], &[], &["c1"], &["a1"]),
            (&["/cmd"], &[], &["/ep"], &["c1"], &["/cmd"]),
            (
                &["/cmd", "x"],
                &["a1"],
                &["/ep"],
                &["c1"],
                &["/cmd", "x", "a1"],
            ),
            (&["/cmd"], &["a1", "a2"], &[], &[], &["/cmd", "a1", "a2"]),
            // ENTRYPOINT [""] resets the entrypoint.
            (&[], &[], &[""], &["c1"], &["c1"]),
            (&[], &["a1"], &[""], &["c1"], &["a1"]),
            // A longer entrypoint with an empty string is kept as is.
            (&[], &[], &["", "x"], &[], &["", "x"]),
        ];
        for (i, (command, a, ep, cmd, want)) in table.iter().enumerate() {
            let got = args(&cfg(command, a), &image(ep, cmd)).unwrap();
            assert_eq!(got, s(want), "row {i}");
        }
    }

    #[test]
    fn no_command_is_an_error() {
        let e = args(&cfg(&[], &[]), &image(&[], &[])).unwrap_err();
        assert_eq!(e.field(), "command");
        let e = args(&cfg(&[], &[]), &image(&[""], &[])).unwrap_err();
        assert_eq!(e.field(), "command");
    }

    #[test]
    fn env_order_and_overrides() {
        let mut c = cfg(&[], &[]);
        c.envs = vec![
            v1::KeyValue {
                key: "B".into(),
                value: b"cri".to_vec(),
            },
            v1::KeyValue {
                key: "NEW".into(),
                value: b"x=y".to_vec(),
            },
            v1::KeyValue {
                key: "PATH".into(),
                value: b"/cri/bin".to_vec(),
            },
        ];
        let img = ImageConfig {
            env: s(&["A=img", "B=img", "HOME=/img-home"]),
            ..Default::default()
        };
        let got = env(&c, &img, "pod-a", Some("/root")).unwrap();
        assert_eq!(
            got,
            s(&[
                "PATH=/cri/bin",
                "HOSTNAME=pod-a",
                "A=img",
                "B=cri",
                "HOME=/img-home",
                "NEW=x=y",
            ])
        );
    }

    #[test]
    fn env_defaults_and_home() {
        let got = env(
            &cfg(&[], &[]),
            &ImageConfig::default(),
            "h",
            Some("/home/u"),
        )
        .unwrap();
        assert_eq!(got, s(&[DEFAULT_PATH_ENV, "HOSTNAME=h", "HOME=/home/u"]));
        let got = env(&cfg(&[], &[]), &ImageConfig::default(), "h", None).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn image_env_without_value_unsets() {
        let img = ImageConfig {
            env: s(&["HOSTNAME", "X=1"]),
            ..Default::default()
        };
        let got = env(&cfg(&[], &[]), &img, "h", None).unwrap();
        assert_eq!(got, s(&[DEFAULT_PATH_ENV, "X=1"]));
    }

    #[test]
    fn bad_env_key_names_the_field() {
        let mut c = cfg(&[], &[]);
        c.envs = vec![
            v1::KeyValue {
                key: "OK".into(),
                value: b"1".to_vec(),
            },
            v1::KeyValue {
                key: "A=B".into(),
                value: b"1".to_vec(),
            },
        ];
        let e = env(&c, &ImageConfig::default(), "h", None).unwrap_err();
        assert_eq!(e.field(), "envs[1].key");
    }

    #[test]
    fn working_dir_precedence() {
        let mut c = cfg(&[], &[]);
        let mut img = ImageConfig::default();
        assert_eq!(cwd(&c, &img).unwrap(), "/");
        img.working_dir = "/app".into();
        assert_eq!(cwd(&c, &img).unwrap(), "/app");
        c.working_dir = "/work".into();
        assert_eq!(cwd(&c, &img).unwrap(), "/work");
        c.working_dir = "rel".into();
        assert_eq!(cwd(&c, &img).unwrap_err().field(), "working_dir");
        c.working_dir.clear();
        img.working_dir = "rel".into();
        assert_eq!(
            cwd(&c, &img).unwrap_err().field(),
            "image config WorkingDir"
        );
    }
}
