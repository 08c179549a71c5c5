use super::*;
use crate::tree::testing::{add_file, add_symlink};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      app:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nadm:x:4:app\napp:x:1000:\nweb:x:2000:daemon,app\n";

fn image() -> Tree {
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "etc/passwd", PASSWD.as_bytes());
    add_file(&mut t, "etc/group", GROUP.as_bytes());
    add_file(
        &mut t,
        "usr/bin/python3.11",
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0",
    );
    add_symlink(&mut t, "usr/bin/python3", "python3.11");
    add_file(
        &mut t,
        "bin/arm",
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\xb7\0",
    );
    t
}

fn config(ep: &[&str], cmd: &[&str]) -> ContainerConfig {
    let v = |a: &[&str]| (!a.is_empty()).then(|| a.iter().map(|s| s.to_string()).collect());
    ContainerConfig {
        entrypoint: v(ep),
        cmd: v(cmd),
        ..ContainerConfig::default()
    }
}

fn opts() -> AppOptions {
    AppOptions {
        hostname: "api".into(),
        stop_timeout_secs: 10,
        restart: Restart::No,
        network_timeout_secs: 20,
    }
}

#[test]
fn entrypoint_then_cmd_or_cmd_alone() {
    assert_eq!(
        command(&config(&["a", "b"], &["c"])).unwrap(),
        ["a", "b", "c"]
    );
    assert_eq!(command(&config(&[], &["c", "d"])).unwrap(), ["c", "d"]);
    assert_eq!(command(&config(&["a"], &[])).unwrap(), ["a"]);
    assert!(matches!(
        command(&config(&[], &[])),
        Err(AppError::NothingToRun)
    ));
}

#[test]
fn env_over_default_path_with_home_and_hostname() {
    let e = environment(
        &["FOO=1".into(), "PATH=/opt/bin".into()],
        "/home/app",
        "api",
    );
    assert_eq!(
        e,
        ["PATH=/opt/bin", "FOO=1", "HOSTNAME=api", "HOME=/home/app"]
    );
    let e = environment(&["HOME=/srv".into()], "/root", "api");
    assert_eq!(e[0], DEFAULT_PATH);
    assert!(e.contains(&"HOME=/srv".to_string()) && !e.contains(&"HOME=/root".to_string()));
}

#[test]
fn users_by_name_uid_and_group() {
    let t = image();
    let u = resolve_user(&t, "app").unwrap();
    assert_eq!(
        (u.uid, u.gid, u.groups.clone(), u.home.as_str()),
        (1000, 1000, vec![4, 2000], "/home/app")
    );
    assert_eq!(resolve_user(&t, "1000").unwrap(), u);
    let u = resolve_user(&t, "app:web").unwrap();
    assert_eq!((u.uid, u.gid, u.groups), (1000, 2000, vec![4]));
    let u = resolve_user(&t, "1000:3000").unwrap();
    assert_eq!((u.uid, u.gid), (1000, 3000));
    // A uid without a passwd entry runs with gid 0 and home /, as runc does.
    let u = resolve_user(&t, "4242").unwrap();
    assert_eq!(
        (u.uid, u.gid, u.groups.len(), u.home.as_str()),
        (4242, 0, 0, "/")
    );
    let root = resolve_user(&t, "").unwrap();
    assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
    assert!(matches!(
        resolve_user(&t, "nobody"),
        Err(AppError::UnknownUser { .. })
    ));
    assert!(matches!(
        resolve_user(&t, "app:nogroup"),
        Err(AppError::UnknownGroup { .. })
    ));
    // No /etc/passwd at all (FROM scratch): numeric ids only.
    let empty = Tree::in_temp().unwrap();
    assert_eq!(resolve_user(&empty, "65532:65532").unwrap().gid, 65532);
    assert!(resolve_user(&empty, "app").is_err());
}

#[test]
fn resolves_a_whole_config() {
    let t = image();
    let mut c = config(&["python3", "/app/serve.py"], &["8080"]);
    c.user = Some("app".into());
    c.working_dir = Some("/srv/www".into());
    c.env = Some(vec!["GREETING=hi".into()]);
    c.exposed_ports = Some([("8080/tcp".to_string(), serde_json::json!({}))].into());
    c.stop_signal = Some("SIGINT".into());
    let a = resolve(&t, &c, &opts()).unwrap();
    assert_eq!(a.args, ["python3", "/app/serve.py", "8080"]);
    assert_eq!(
        (a.uid, a.gid, a.groups.clone()),
        (1000, 1000, vec![4, 2000])
    );
    assert_eq!(a.working_dir, "/srv/www");
    assert_eq!(a.stop_signal, libc::SIGINT);
    assert_eq!(a.exposed_ports, ["8080/tcp"]);
    assert!(a.env.contains(&"GREETING=hi".to_string()));
}

#[test]
fn program_must_exist_and_be_x86_64() {
    let t = image();
    let err = resolve(&t, &config(&["nginx"], &[]), &opts()).unwrap_err();
    assert!(
        matches!(err, AppError::NoProgram { searched: true, .. }),
        "{err}"
    );
    let err = resolve(&t, &config(&["/bin/arm"], &[]), &opts()).unwrap_err();
    assert!(err.to_string().contains("arm64"), "{err}");
    // A PATH from the image is used for the lookup.
    let mut c = config(&["python3"], &[]);
    c.env = Some(vec!["PATH=/nowhere".into()]);
    assert!(resolve(&t, &c, &opts()).is_err());
}

#[test]
fn stop_signals() {
    assert_eq!(stop_signal(None).unwrap(), libc::SIGTERM);
    assert_eq!(stop_signal(Some("SIGQUIT")).unwrap(), libc::SIGQUIT);
    assert_eq!(stop_signal(Some("term")).unwrap(), libc::SIGTERM);
    assert_eq!(stop_signal(Some("9")).unwrap(), 9);
    assert_eq!(
        stop_signal(Some("SIGRTMIN+3")).unwrap(),
        libc::SIGRTMIN() + 3
    );
    assert!(stop_signal(Some("SIGNOPE")).is_err());
    assert!(stop_signal(Some("99")).is_err());
}
