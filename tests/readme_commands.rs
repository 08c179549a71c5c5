//! The README's example commands run: every `d2v …` line of its ```sh blocks is run with the
//! real binary (`$D2V_BIN`, else this build's), in a work directory holding the inputs the
//! README names (`app.tar`, `app-oci`), against a real local registry (Debian's
//! docker-registry) that serves `ghcr.io/org/app:tag` through a containers-registries.conf
//! rewrite (`$CONTAINERS_REGISTRIES_CONF`). That image is the systemd fixture when it is built
//! (see [`push_readme_image`]). A line that fails, or an output it names with `-o`
//! that is not there afterwards, fails the test: the README cannot drift from the CLI.
//!
//! Fences: ```sh blocks hold runnable commands; ```text blocks hold synopses, whose `d2v` lines
//! must have a placeholder (`REF`, `SOURCE`, …) and are not run; a `d2v` line in any other
//! fence fails the test (an example must not hide where it is not run). The only lines of
//! ```sh blocks not run are those in [`NOT_RUN`], each with why.

use testkit::registry::{Kind, Registry};
use testkit::shell;

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// Commands in the README's ```sh blocks that this test does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo xtask demo",
        "the project's own command: CI (.ci/run) runs it after the tests",
    ),
    (
        "cargo xtask test",
        "the project's own command: it runs this test (.ci/run)",
    ),
];

/// The image name the README's examples use for a registry image.
const APP: &str = "ghcr.io/org/app:tag";

#[derive(Debug, PartialEq)]
struct Fence {
    /// The info string (`sh`, `text`, `` for none).
    lang: String,
    /// The block's commands: lines joined at `\` continuations, trailing `# comments` and
    /// comment-only lines dropped, blank lines left out.
    commands: Vec<String>,
    /// 1-based line of the opening fence.
    line: usize,
}

/// The fenced code blocks of a Markdown text.
fn fences(md: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<Fence> = None;
    let mut pending = String::new();
    for (i, l) in md.lines().enumerate() {
        let t = l.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            match open.take() {
                None => {
                    open = Some(Fence {
                        lang: info.trim().to_string(),
                        commands: Vec::new(),
                        line: i + 1,
                    });
                }
                Some(f) => {
                    assert!(pending.is_empty(), "README:{}: unfinished `\\` line", i + 1);
                    out.push(f);
                }
            }
            continue;
        }
        let Some(f) = open.as_mut() else { continue };
        let code = strip_comment(l);
        if let Some(head) = code.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(code);
        let cmd = std::mem::take(&mut pending).trim().to_string();
        if !cmd.is_empty() {
            f.commands.push(cmd);
        }
    }
    assert!(open.is_none(), "README: a code fence is not closed");
    out
}

/// A shell line without its trailing `# comment` (a `#` at a word start outside quotes).
fn strip_comment(l: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in l.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &l[..i],
            _ => {}
        }
        prev = c;
    }
    l
}

fn is_d2v(cmd: &str) -> bool {
    cmd == "d2v" || cmd.starts_with("d2v ")
}

/// A synopsis line names what to fill in: an upper-case placeholder word (`REF`, `SOURCE`,
/// `FILE.tar`, `DIR`).
fn has_placeholder(cmd: &str) -> bool {
    cmd.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_uppercase()))
}

/// The files a command writes: the value of each `-o`/`--output` but `-`.
fn outputs(cmd: &str) -> Vec<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let mut v = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if let Some(o) = w.strip_prefix("--output=") {
            v.push(o.to_string());
        } else if (*w == "-o" || *w == "--output") && i + 1 < words.len() && words[i + 1] != "-" {
            v.push(words[i + 1].to_string());
        }
    }
    v
}

/// The README's runnable `d2v` commands, checking the rules of the module comment.
fn readme_commands() -> Vec<(usize, String)> {
    let md = std::fs::read_to_string(testkit::workspace_root().join("README.md")).unwrap();
    let mut run = Vec::new();
    for f in fences(&md) {
        for c in &f.commands {
            match f.lang.as_str() {
                "sh" if is_d2v(c) => run.push((f.line, c.clone())),
                "sh" => assert!(
                    NOT_RUN.iter().any(|(n, _)| n == c),
                    "README:{}: `{c}` in a ```sh block is neither a d2v command (run by this \
                     test) nor one of those it says why it does not run (NOT_RUN)",
                    f.line
                ),
                "text" if is_d2v(c) => assert!(
                    has_placeholder(c),
                    "README:{}: `{c}` is a concrete command in a ```text block: move it to a \
                     ```sh block, where it runs",
                    f.line
                ),
                "text" => {}
                other => assert!(
                    !is_d2v(c),
                    "README:{}: `{c}` is in a ```{other} block: a d2v example goes in ```sh \
                     (run by this test) or, as a synopsis with placeholders, in ```text",
                    f.line
                ),
            }
        }
    }
    run
}

#[test]
fn readme_fences_are_parsed() {
    let md = "a\n```sh\nd2v pull x -o a.ova   # note\nd2v build \\\n  oci:d:1 -o 'b #c.ova'\n\n# only a comment\n```\n```text\nd2v pull REF\n```\n";
    assert_eq!(
        fences(md),
        vec![
            Fence {
                lang: "sh".into(),
                commands: vec![
                    "d2v pull x -o a.ova".into(),
                    "d2v build   oci:d:1 -o 'b #c.ova'".into()
                ],
                line: 2
            },
            Fence {
                lang: "text".into(),
                commands: vec!["d2v pull REF".into()],
                line: 9
            }
        ]
    );
    assert!(has_placeholder("d2v export SOURCE -o FILE.tar|-"));
    assert!(!has_placeholder("d2v pull ghcr.io/org/app:tag -o app.ova"));
    assert_eq!(
        outputs("d2v build x --format ovf -o app-ovf --name a"),
        ["app-ovf"]
    );
    assert!(outputs("d2v export x -o -").is_empty());
}

/// Every README `d2v` example, run.
#[test]
fn readme_examples_run() {
    let cmds = readme_commands();
    // The examples the README has now (a floor, so that the extraction cannot silently find
    // nothing): the first pull, then Usage's pull, two builds, inspect and export.
    assert!(cmds.len() >= 6, "too few d2v examples found: {cmds:?}");
    for sub in ["pull", "build", "inspect", "export"] {
        assert!(
            cmds.iter()
                .any(|(_, c)| c.starts_with(&format!("d2v {sub} "))),
            "no `d2v {sub}` example found in the README: {cmds:?}"
        );
    }

    let scratch = testkit::scratch_dir("readme");
    let work = scratch.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let reg = Registry::start(Kind::Plain);
    // ghcr.io/org/app:tag, served by the local registry as 127.0.0.1:PORT/org/app:tag.
    let apps_served = push_readme_image(&reg, &scratch);
    let conf = scratch.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"ghcr.io/org\"\nlocation = \"{}/org\"\n",
            reg.host
        ),
    )
    .unwrap();
    // The local inputs the README names: `docker save`'s archive and skopeo's OCI layout.
    let pushed = format!("docker://{}/org/app:tag", reg.host);
    skopeo_copy(
        &pushed,
        &format!("docker-archive:{}:{APP}", work.join("app.tar").display()),
    );
    skopeo_copy(
        &pushed,
        &format!("oci:{}:1.0", work.join("app-oci").display()),
    );

    let bin = shell::d2v_on_path(&scratch, D2V);
    let env = vec![
        (
            "HOME".to_string(),
            scratch.join("home").display().to_string(),
        ),
        (
            "XDG_CACHE_HOME".to_string(),
            scratch.join("cache").display().to_string(),
        ),
        (
            "CONTAINERS_REGISTRIES_CONF".to_string(),
            conf.display().to_string(),
        ),
        (
            "TMPDIR".to_string(),
            std::env::temp_dir().display().to_string(),
        ),
    ];
    for (line, cmd) in &cmds {
        let what = format!("README:{line}: `{cmd}`");
        if needs_app_fixtures(cmd) && !apps_served {
            eprintln!("NOTICE: skipped {what}: the app fixtures are not built (cargo xtask test)");
            continue;
        }
        eprintln!("running {what}");
        let out = shell::run_ok(
            shell::shell(cmd, &work, false, &env, &shell::path_with(&bin)),
            &what,
        );
        for o in outputs(cmd) {
            let p = work.join(&o);
            let size = std::fs::metadata(&p)
                .map(|m| if m.is_dir() { 1 } else { m.len() })
                .unwrap_or(0);
            assert!(size > 0, "{what}: wrote no {}", p.display());
            if o.ends_with(".ova") {
                shell::assert_ova(&p);
            }
            // The next example writing the same name must write it itself.
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        if cmd.contains("--json") {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}"));
            assert!(v.is_object(), "{what}: {v}");
        }
    }
    // The registry examples were served by the local registry, through the rewrite.
    assert!(
        reg.requests()
            .iter()
            .any(|r| r.path.starts_with("/v2/org/app/manifests/") && r.status == 200),
        "no README example pulled from the local registry"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Pushes the image the README's examples run on as `org/app:tag`: the systemd fixture (Debian
/// 12 with its cloud kernel, as built by `cargo xtask test`) when it is there; else, unless
/// fixtures are required (`D2V_REQUIRE_FIXTURES=1` or `D2V_FIXTURES` set), the small hand-made
/// image of `testkit::shell`, with a notice. Also the app-image example's images; whether
/// they are served.
fn push_readme_image(reg: &Registry, scratch: &std::path::Path) -> bool {
    let required = std::env::var("D2V_REQUIRE_FIXTURES").as_deref() == Ok("1")
        || std::env::var_os("D2V_FIXTURES").is_some();
    let apps_served = push_app_images(reg, required);
    match testkit::fixtures::try_load(testkit::fixtures::SYSTEMD) {
        Some(f) => reg.push(&f.oci_ref(), "org/app:tag"),
        None if required => {
            testkit::fixtures::load(testkit::fixtures::SYSTEMD);
        }
        None => {
            eprintln!(
                "NOTICE: the systemd fixture is not built: the README's examples run on a small \
                 hand-made image (cargo xtask test builds the fixture)"
            );
            shell::push_app_image(reg, scratch, "org/app:tag");
        }
    }
    apps_served
}

/// The README's app-image example: `org/api:1.4` is the app-python fixture and
/// `org/vm-kernel:6.1` the kernel-debian one. Without them (and not required), the lines using
/// them are skipped ([`needs_app_fixtures`]).
fn push_app_images(reg: &Registry, required: bool) -> bool {
    use testkit::fixtures::apps;
    let pairs = [
        (apps::APP_PYTHON, "org/api:1.4"),
        (apps::KERNEL_DEBIAN, "org/vm-kernel:6.1"),
    ];
    for (name, repo_tag) in pairs {
        match apps::try_load_app(name) {
            Some(f) => reg.push(&f.oci_ref(), repo_tag),
            None if required => drop(apps::load_app(name)),
            None => return false,
        }
    }
    true
}

/// Whether a README command needs the app fixtures (the app-image example).
fn needs_app_fixtures(cmd: &str) -> bool {
    cmd.contains("--kernel-from")
}

fn skopeo_copy(from: &str, to: &str) {
    let skopeo = testkit::require_tool("skopeo", "skopeo");
    shell::run_ok(
        {
            let mut c = std::process::Command::new(skopeo);
            c.args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                from,
                to,
            ]);
            c
        },
        &format!("skopeo copy {from} {to}"),
    );
}
