//! The CI and fleet recipes of `examples/ci/` (README "In CI pipelines and fleets"):
//!
//! - validated against the platforms' published schemas where a package ships them: the GitHub
//!   workflow and the GitLab CI file with `check-jsonschema`'s vendored schemas, the Kubernetes
//!   objects with `kubernetes-validate --strict` (Kubernetes' OpenAPI schemas); each validator
//!   is also shown a broken copy, which it must reject. Tekton publishes no such schema: its
//!   objects are checked by structure (every parameter, workspace and result used is declared
//!   and bound, the d2v step runs unprivileged with d2v's image's entrypoint);
//! - run: each recipe's d2v steps are run as the platform would run them, with the real binary
//!   (`$D2V_BIN`, else this build's) on PATH, against a local docker-registry with TLS and basic
//!   auth that holds the image under the name the recipe's kaniko step pushes to. What the test
//!   stands in for, and so does not run, is said where it happens: the checkout, kaniko (the
//!   image is pushed with skopeo), installing d2v (the binary under test is on PATH), the
//!   platform's cache and artifact steps (the test checks the paths they name).
//!
//! The registry's certificate is from a test CA: a registries.conf marks that one location
//! `insecure` (see `testkit::shell`); everything else is the recipe's.
//!
//! `check-jsonschema` and `kubernetes-validate` (pinned) are installed from PyPI into
//! `target/ci-schemas-venv` on the first run (Debian's python3-venv; `cargo xtask test` installs
//! it); the YAML is read with that venv's PyYAML. These tests are `#[ignore]`d for a plain
//! `cargo test` because of that download; `cargo xtask test` runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use testkit::registry::{Kind, Registry, PASSWORD, USER};
use testkit::shell;

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// The validators, pinned: a new release could change what passes.
const PIP_PACKAGES: &[&str] = &["check-jsonschema==0.39.0", "kubernetes-validate==1.37.0"];

fn recipe(name: &str) -> PathBuf {
    testkit::workspace_root().join("examples/ci").join(name)
}

// ---------------------------------------------------------------------------------------------
// The validators (a venv under target/) and YAML

/// The venv's `bin/`, made (once, and again when [`PIP_PACKAGES`] change) by
/// `python3 -m venv` and `pip install`.
fn venv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| testkit::workspace_root().join("target"));
        let venv = target.join("ci-schemas-venv");
        let stamp = venv.join("d2v-packages");
        let want = PIP_PACKAGES.join("\n");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
            return venv.join("bin");
        }
        eprintln!(
            "installing {} from PyPI into {} (once; needed by the CI recipe schema checks)",
            PIP_PACKAGES.join(" "),
            venv.display()
        );
        // Debian's python3 (with python3-venv), not whatever python3 comes first on PATH.
        let python = if Path::new("/usr/bin/python3").is_file() {
            PathBuf::from("/usr/bin/python3")
        } else {
            testkit::require_tool("python3", "python3-venv")
        };
        let tmp = target.join(format!("ci-schemas-venv.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        shell::run_ok(
            {
                let mut c = Command::new(&python);
                c.args(["-m", "venv"]).arg(&tmp);
                c
            },
            "python3 -m venv (install Debian's python3-venv; cargo xtask test does)",
        );
        shell::run_ok(
            {
                let mut c = Command::new(tmp.join("bin/pip"));
                c.args(["install", "-q", "--disable-pip-version-check"])
                    .args(PIP_PACKAGES);
                c
            },
            "pip install of the schema validators from PyPI",
        );
        std::fs::write(tmp.join("d2v-packages"), &want).unwrap();
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::rename(&tmp, &venv).unwrap();
        // The venv's scripts name the temporary path in their #! lines: call them through its
        // python instead (see [`tool`]).
        venv.join("bin")
    })
}

/// A command running the venv's `module` (`python -m …`; the venv was moved after its
/// scripts were written).
fn tool(module: &str) -> Command {
    let mut c = Command::new(venv_bin().join("python"));
    c.args(["-m", module]);
    c
}

/// Every YAML document of `path`, as JSON (the venv's PyYAML, safe loader).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let mut c = Command::new(venv_bin().join("python"));
    c.args([
        "-c",
        "import json, sys, yaml\njson.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
    ])
    .arg(path);
    let out = shell::run_ok(c, &format!("reading {} as YAML", path.display()));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn yaml_doc(path: &Path) -> Value {
    let mut d = yaml_docs(path);
    assert_eq!(d.len(), 1, "{}: one YAML document expected", path.display());
    d.remove(0)
}

fn output(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

/// `check-jsonschema --builtin-schema SCHEMA FILE`.
fn check_jsonschema(schema: &str, file: &Path) -> Output {
    let mut c = tool("check_jsonschema");
    c.args(["--builtin-schema", schema]).arg(file);
    output(c)
}

/// `kubernetes-validate --strict FILE`.
fn kubernetes_validate(file: &Path) -> Output {
    let mut c = tool("kubernetes_validate");
    c.arg("--strict").arg(file);
    output(c)
}

/// A copy of recipe `name` with `from` replaced by `to` (which must occur), in `dir`.
fn broken_copy(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(recipe(name)).unwrap();
    assert!(text.contains(from), "{name} has no {from:?} any more");
    let p = dir.join(name);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// `file` passes check-jsonschema's vendored `schema`, and a copy with `from` replaced by `to`
/// does not (the validator is not vacuous).
fn schema_accepts_and_refuses_a_broken_copy(schema: &str, file: &str, from: &str, to: &str) {
    let out = check_jsonschema(schema, &recipe(file));
    assert!(out.status.success(), "{}", testkit::output_text(&out));
    let dir = testkit::scratch_dir(&format!("ci-schema-{file}"));
    let bad = broken_copy(&dir, file, from, to);
    let out = check_jsonschema(schema, &bad);
    assert!(!out.status.success(), "a broken {file} passed");
}

#[test]
#[ignore = "installs check-jsonschema from PyPI into target/ (cargo xtask test runs it)"]
fn github_workflow_matches_the_published_schema() {
    // A job without runs-on is rejected.
    schema_accepts_and_refuses_a_broken_copy(
        "vendor.github-workflows",
        "github-actions.yml",
        "runs-on:",
        "runs_on:",
    );
}

#[test]
#[ignore = "installs check-jsonschema from PyPI into target/ (cargo xtask test runs it)"]
fn gitlab_ci_matches_the_published_schema() {
    schema_accepts_and_refuses_a_broken_copy(
        "vendor.gitlab-ci",
        "gitlab-ci.yml",
        "expire_in: 1 week",
        "expire_in: [1]",
    );
}

#[test]
#[ignore = "installs kubernetes-validate from PyPI into target/ (cargo xtask test runs it)"]
fn k8s_job_matches_the_kubernetes_schemas() {
    let out = kubernetes_validate(&recipe("k8s-job.yaml"));
    let text = testkit::output_text(&out);
    assert!(out.status.success(), "{text}");
    for what in [
        "persistentvolumeclaim/d2v-cache",
        "persistentvolumeclaim/d2v-ovas",
        "job/d2v-app",
    ] {
        assert!(
            text.contains(&format!("passed for resource {what}")),
            "{what} not validated:\n{text}"
        );
    }
    // --strict rejects a field Kubernetes does not have.
    let dir = testkit::scratch_dir("ci-schema-k8s");
    let bad = broken_copy(
        &dir,
        "k8s-job.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFS: true",
    );
    assert!(
        !kubernetes_validate(&bad).status.success(),
        "a Job with an unknown field passed"
    );
}

// ---------------------------------------------------------------------------------------------
// Substitution helpers

/// Replaces each `OPEN expr CLOSE` in `s` by `value(expr)`; an expression it does not know
/// fails the test (so a recipe cannot grow one the test would not notice).
fn substitute(s: &str, open: &str, close: &str, value: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        let after = &rest[i + open.len()..];
        let j = after
            .find(close)
            .unwrap_or_else(|| panic!("unclosed {open} in {s:?}"));
        let expr = after[..j].trim();
        out.push_str(
            &value(expr)
                .unwrap_or_else(|| panic!("unknown expression {open}{expr}{close} in {s:?}")),
        );
        rest = &after[j + close.len()..];
    }
    out.push_str(rest);
    out
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, found {v}"))
}

fn list<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: a list expected, found {v}"))
}

fn by_name<'a>(items: &'a Value, name: &str, what: &str) -> &'a Value {
    list(items, what)
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{what}: no {name:?} in {items}"))
}

/// The environment a recipe's shell step gets besides its own variables: a private HOME and
/// TMPDIR, and the registries.conf that trusts the test registry.
fn base_env(scratch: &Path, conf: &Path) -> Vec<(String, String)> {
    let home = scratch.join("home");
    let tmp = scratch.join("tmp");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    vec![
        ("HOME".into(), home.display().to_string()),
        ("TMPDIR".into(), tmp.display().to_string()),
        (
            "CONTAINERS_REGISTRIES_CONF".into(),
            conf.display().to_string(),
        ),
    ]
}

/// Asserts `config.json` in `dir` holds the test registry's credentials for `host`.
fn assert_docker_config(dir: &Path, host: &str) {
    let p = dir.join("config.json");
    let v: Value = serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
    use base64::Engine;
    let auth = str_of(&v["auths"][host]["auth"], "auths.HOST.auth");
    let plain = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    assert_eq!(
        String::from_utf8(plain).unwrap(),
        format!("{USER}:{PASSWORD}")
    );
}

/// A TLS + basic-auth registry holding the small image as `repo_tag`, and a registries.conf
/// trusting it.
fn registry_with(scratch: &Path, repo_tags: &[&str]) -> (Registry, PathBuf) {
    let reg = Registry::start(Kind::TlsBasic);
    for rt in repo_tags {
        shell::push_app_image(&reg, scratch, rt);
    }
    let conf = shell::trust_test_registry(scratch, &reg.host);
    (reg, conf)
}

/// Asserts d2v authenticated: the registry answered a manifest of `repo` with 200.
fn assert_pulled(reg: &Registry, repo: &str) {
    let reqs = reg.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path.starts_with(&format!("/v2/{repo}/manifests/")) && r.status == 200),
        "no manifest of {repo} served: {reqs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// GitHub Actions

#[test]
#[ignore = "installs PyYAML from PyPI into target/ (cargo xtask test runs it)"]
fn github_workflow_runs() {
    let wf = yaml_doc(&recipe("github-actions.yml"));
    let jobs = wf["jobs"].as_object().expect("jobs");
    assert_eq!(jobs.len(), 1, "one job expected");
    let job = &jobs["vm-image"];
    assert_eq!(job["runs-on"], "ubuntu-latest");
    let steps = list(&job["steps"], "steps");
    let ids: Vec<&str> = steps.iter().map(|s| str_of(&s["id"], "step id")).collect();
    // Run: `auth` (writes the docker config JSON) and `convert` (d2v). Stood in for: checkout
    // (the work directory), kaniko (skopeo pushes the image to the name it pushes to), install
    // (the binary under test is on PATH), cache and upload (their paths are checked).
    assert_eq!(
        ids,
        ["checkout", "auth", "kaniko", "install", "cache", "convert", "upload"]
    );
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).unwrap();

    let scratch = testkit::scratch_dir("ci-github");
    let ws = scratch.join("workspace");
    let temp = scratch.join("runner-temp");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&temp).unwrap();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = "org/app";
    // The registry is the one value the test changes (REGISTRY: ghcr.io → the local one).
    let (reg, conf) = registry_with(&scratch, &[&format!("{repo}:{sha}")]);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let expr = |env: &BTreeMap<String, String>, e: &str| -> Option<String> {
        Some(match e {
            "github.repository" => repo.into(),
            "github.sha" => sha.into(),
            "github.actor" => USER.into(),
            "secrets.GITHUB_TOKEN" => PASSWORD.into(),
            "github.workspace" => ws.display().to_string(),
            _ => env.get(e.strip_prefix("env.")?)?.clone(),
        })
    };
    let add_env = |env: &mut BTreeMap<String, String>, block: &Value| {
        if let Some(m) = block.as_object() {
            for (k, v) in m {
                let raw = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                let val = substitute(&raw, "${{", "}}", &|e| expr(env, e));
                env.insert(k.clone(), val);
            }
        }
    };
    add_env(&mut env, &wf["env"]);
    assert_eq!(env["REGISTRY"], "ghcr.io");
    env.insert("REGISTRY".into(), reg.host.clone());
    add_env(&mut env, &job["env"]);
    for (k, v) in [
        ("GITHUB_WORKSPACE", ws.display().to_string()),
        ("GITHUB_SHA", sha.to_string()),
        ("RUNNER_TEMP", temp.display().to_string()),
        (
            "GITHUB_PATH",
            temp.join("github-path").display().to_string(),
        ),
        ("CI", "true".to_string()),
    ] {
        env.insert(k.into(), v);
    }

    // Where kaniko pushes: the name the image was pushed to here.
    let args = str_of(&step("kaniko")["with"]["args"], "kaniko args");
    let args = substitute(args, "${{", "}}", &|e| expr(&env, e));
    assert!(
        step("kaniko")["uses"]
            .as_str()
            .unwrap()
            .starts_with("docker://gcr.io/kaniko-project/executor:"),
        "the image is built by kaniko"
    );
    let dest = args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--destination="))
        .expect("kaniko --destination");
    assert_eq!(dest, format!("{}/{repo}:{sha}", reg.host));
    // kaniko runs in a container that has the workspace as /github/workspace.
    let kaniko_config = str_of(
        &step("kaniko")["env"]["DOCKER_CONFIG"],
        "kaniko DOCKER_CONFIG",
    );
    assert_eq!(
        Path::new(&env["DOCKER_CONFIG"]).strip_prefix(&ws).unwrap(),
        Path::new(kaniko_config)
            .strip_prefix("/github/workspace")
            .unwrap(),
        "kaniko and d2v read the same docker config"
    );

    let bin = shell::d2v_on_path(&scratch, D2V);
    for id in ["auth", "convert"] {
        let s = step(id);
        let mut step_env = env.clone();
        add_env(&mut step_env, &s["env"]);
        let mut all = base_env(&scratch, &conf);
        all.extend(step_env);
        let script = str_of(&s["run"], "run");
        assert!(!script.contains("${{"), "{id}: expressions belong in env");
        shell::run_ok(
            shell::shell(script, &ws, true, &all, &shell::path_with(&bin)),
            &format!("github step {id}"),
        );
        if id == "auth" {
            assert_docker_config(Path::new(&env["DOCKER_CONFIG"]), &reg.host);
        }
    }
    assert!(
        str_of(&step("convert")["run"], "run")
            .contains("d2v pull \"$REGISTRY/$IMAGE_NAME:$GITHUB_SHA\""),
        "the convert step pulls what kaniko pushed"
    );
    assert_pulled(&reg, repo);
    // What upload-artifact keeps and actions/cache saves.
    let kept = str_of(&step("upload")["with"]["path"], "upload path");
    let kept: Vec<&str> = kept
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(kept.contains(&"app.ova"), "{kept:?}");
    for k in &kept {
        assert!(ws.join(k).is_file(), "artifact {k} not written");
    }
    shell::assert_ova(&ws.join("app.ova"));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(ws.join("d2v.json")).unwrap()).unwrap();
    assert!(summary.is_object());
    let cache = str_of(&step("cache")["with"]["path"], "cache path");
    assert!(
        shell::cached_blobs(&ws.join(cache)) >= 3,
        "nothing cached in {cache}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

// ---------------------------------------------------------------------------------------------
// GitLab CI

#[test]
#[ignore = "installs PyYAML from PyPI into target/ (cargo xtask test runs it)"]
fn gitlab_ci_runs() {
    let ci = yaml_doc(&recipe("gitlab-ci.yml"));
    // Every job is looked at here: a new one must be run or said why not.
    let keys: Vec<&str> = ci.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["build-image", "stages", "variables", "vm-image"]);
    let build = &ci["build-image"];
    let vm = &ci["vm-image"];
    assert_eq!(vm["needs"], serde_json::json!(["build-image"]));
    assert!(str_of(&build["image"]["name"], "kaniko image")
        .starts_with("gcr.io/kaniko-project/executor:"));
    let kaniko = list(&build["script"], "build script")
        .iter()
        .map(|l| str_of(l, "script line"))
        .find(|l| l.starts_with("/kaniko/executor "))
        .expect("a kaniko line");
    assert!(kaniko.contains("--destination \"$IMAGE\""), "{kaniko}");
    let d2v_line = list(&vm["script"], "vm script")
        .iter()
        .map(|l| str_of(l, "script line"))
        .find(|l| l.starts_with("d2v "))
        .expect("a d2v line");
    assert!(d2v_line.starts_with("d2v pull \"$IMAGE\""), "{d2v_line}");

    let scratch = testkit::scratch_dir("ci-gitlab");
    let project = scratch.join("project");
    std::fs::create_dir_all(&project).unwrap();
    let short = "0123abcd";
    let (reg, conf) = registry_with(&scratch, &[&format!("org/app:{short}")]);
    // GitLab's predefined variables (the registry is the local one), then the file's
    // variables, global then the job's, exported in order (GitLab expands $VARs in them).
    let mut script = String::new();
    for (k, v) in [
        ("CI", "true".to_string()),
        ("CI_PROJECT_DIR", project.display().to_string()),
        ("CI_REGISTRY", reg.host.clone()),
        ("CI_REGISTRY_IMAGE", format!("{}/org/app", reg.host)),
        ("CI_COMMIT_SHORT_SHA", short.to_string()),
        ("CI_REGISTRY_USER", USER.to_string()),
        ("CI_REGISTRY_PASSWORD", PASSWORD.to_string()),
    ] {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    for block in [&ci["variables"], &vm["variables"]] {
        for (k, v) in block.as_object().into_iter().flatten() {
            script.push_str(&format!("export {k}=\"{}\"\n", str_of(v, k)));
        }
    }
    // before_script installs d2v (a download): the binary under test is on PATH instead.
    assert!(list(&vm["before_script"], "before_script")
        .iter()
        .all(|l| !str_of(l, "line").starts_with("d2v ")));
    for l in list(&vm["script"], "script") {
        script.push_str(str_of(l, "script line"));
        script.push('\n');
    }
    let bin = shell::d2v_on_path(&scratch, D2V);
    shell::run_ok(
        shell::shell(
            &script,
            &project,
            false,
            &base_env(&scratch, &conf),
            &shell::path_with(&bin),
        ),
        "gitlab job vm-image",
    );
    assert_docker_config(&project.join(".docker"), &reg.host);
    assert_pulled(&reg, "org/app");
    for p in list(&vm["artifacts"]["paths"], "artifacts") {
        let p = str_of(p, "artifact");
        assert!(project.join(p).is_file(), "artifact {p} not written");
    }
    shell::assert_ova(&project.join("app.ova"));
    let cache = str_of(&list(&vm["cache"]["paths"], "cache")[0], "cache path");
    assert!(
        shell::cached_blobs(&project.join(cache)) >= 3,
        "nothing cached in {cache}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

// ---------------------------------------------------------------------------------------------
// Tekton

/// The `$(params.X)`, `$(workspaces.X.…)`, `$(results.X.…)` a Task's steps use.
fn tekton_refs(task: &Value) -> Vec<String> {
    let text = task["spec"]["steps"].to_string();
    let mut v = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("$(") {
        let after = &rest[i + 2..];
        let j = after.find(')').expect("closed $(");
        v.push(after[..j].to_string());
        rest = &after[j..];
    }
    v
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().map(|i| str_of(&i["name"], "name")).collect())
        .unwrap_or_default()
}

/// The Tekton objects, checked for consistency; returns them by kind/name.
fn tekton_objects() -> BTreeMap<String, Value> {
    let docs = yaml_docs(&recipe("tekton-task.yaml"));
    let mut by: BTreeMap<String, Value> = BTreeMap::new();
    for d in docs {
        assert_eq!(d["apiVersion"], "tekton.dev/v1", "{d}");
        let kind = str_of(&d["kind"], "kind").to_string();
        let name = d["metadata"]["name"]
            .as_str()
            .or(d["metadata"]["generateName"].as_str())
            .expect("a name")
            .to_string();
        by.insert(format!("{kind}/{name}"), d);
    }
    let keys: Vec<&str> = by.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Pipeline/vm-image",
            "PipelineRun/vm-image-",
            "Task/d2v-pull",
            "Task/kaniko-build"
        ]
    );
    // Each Task uses only what it declares.
    for t in ["Task/d2v-pull", "Task/kaniko-build"] {
        let spec = &by[t]["spec"];
        for r in tekton_refs(&by[t]) {
            let parts: Vec<&str> = r.split('.').collect();
            let declared = match parts[0] {
                "params" => names(&spec["params"]).contains(&parts[1]),
                "workspaces" => {
                    names(&spec["workspaces"]).contains(&parts[1]) && parts[2] == "path"
                }
                "results" => names(&spec["results"]).contains(&parts[1]) && parts[2] == "path",
                _ => false,
            };
            assert!(declared, "{t} uses $({r}), which it does not declare");
        }
    }
    // The Pipeline binds every Task's workspaces and required params, from its own.
    let pipe = &by["Pipeline/vm-image"]["spec"];
    let pipe_ws = names(&pipe["workspaces"]);
    let pipe_params = names(&pipe["params"]);
    let tasks = list(&pipe["tasks"], "pipeline tasks");
    for pt in tasks {
        let pname = str_of(&pt["name"], "task name");
        for w in list(&pt["workspaces"], "workspaces") {
            assert!(
                pipe_ws.contains(&str_of(&w["workspace"], "workspace")),
                "{pname}: {w}"
            );
        }
        for p in list(&pt["params"], "params") {
            let v = str_of(&p["value"], "value");
            for r in substitute_refs(v) {
                let ok = match r.split('.').collect::<Vec<_>>()[..] {
                    ["params", n] => pipe_params.contains(&n),
                    ["tasks", t, "results", res] => {
                        let tref = &by_name(&pipe["tasks"], t, "pipeline tasks")["taskRef"]["name"];
                        let task = &by[&format!("Task/{}", str_of(tref, "taskRef"))];
                        names(&task["spec"]["results"]).contains(&res)
                    }
                    _ => false,
                };
                assert!(ok, "{pname}: $({r}) is not declared");
            }
        }
        let Some(tref) = pt["taskRef"]["name"].as_str() else {
            // A resolver reference (Tekton Hub's git-clone).
            assert_eq!(pt["taskRef"]["resolver"], "hub", "{pname}");
            continue;
        };
        let task = &by[&format!("Task/{tref}")]["spec"];
        let bound = names(&pt["workspaces"]);
        for w in names(&task["workspaces"]) {
            assert!(
                bound.contains(&w),
                "{pname}: workspace {w} of {tref} not bound"
            );
        }
        let given = names(&pt["params"]);
        for p in list(&task["params"], "task params") {
            if p.get("default").is_none() {
                let n = str_of(&p["name"], "param");
                assert!(
                    given.contains(&n),
                    "{pname}: required param {n} of {tref} not given"
                );
            }
        }
    }
    assert_eq!(
        by_name(&pipe["tasks"], "build", "tasks")["runAfter"],
        serde_json::json!(["fetch-source"])
    );
    // The run binds every Pipeline workspace and param; the credentials are a
    // dockerconfigjson Secret's key as config.json.
    let run = &by["PipelineRun/vm-image-"]["spec"];
    assert_eq!(run["pipelineRef"]["name"], "vm-image");
    assert_eq!(names(&run["workspaces"]).len(), pipe_ws.len());
    for w in &pipe_ws {
        assert!(
            names(&run["workspaces"]).contains(w),
            "workspace {w} not bound by the run"
        );
    }
    for p in &pipe_params {
        assert!(
            names(&run["params"]).contains(p),
            "param {p} not given by the run"
        );
    }
    let secret = &by_name(&run["workspaces"], "dockerconfig", "run workspaces")["secret"];
    assert_eq!(
        secret["items"],
        serde_json::json!([{"key": ".dockerconfigjson", "path": "config.json"}])
    );
    // The d2v step: d2v's image's entrypoint, unprivileged.
    let step = &list(&by["Task/d2v-pull"]["spec"]["steps"], "steps")[0];
    assert!(
        step.get("command").is_none() && step.get("script").is_none(),
        "{step}"
    );
    assert_unprivileged(&step["securityContext"], "d2v-pull step");
    by
}

/// The `X` of each `$(X)` in `s`.
fn substitute_refs(s: &str) -> Vec<String> {
    let found = std::cell::RefCell::new(Vec::new());
    substitute(s, "$(", ")", &|e| {
        found.borrow_mut().push(e.to_string());
        Some(String::new())
    });
    found.into_inner()
}

fn assert_unprivileged(sc: &Value, what: &str) {
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}: {sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}: {sc}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}: {sc}"
    );
}

#[test]
#[ignore = "installs PyYAML from PyPI into target/ (cargo xtask test runs it)"]
fn tekton_pipeline_runs() {
    let by = tekton_objects();
    let pipe = &by["Pipeline/vm-image"]["spec"];
    let run = &by["PipelineRun/vm-image-"]["spec"];
    let task = &by["Task/d2v-pull"]["spec"];
    let vm = by_name(&pipe["tasks"], "vm", "tasks");

    let scratch = testkit::scratch_dir("ci-tekton");
    let (reg, conf) = registry_with(&scratch, &["team/app:1.0"]);
    // The run's image param names registry.example.com: the local registry instead (the one
    // value changed); kaniko's IMAGE_DIGEST result is the digest the registry serves.
    let image = str_of(
        &by_name(&run["params"], "image", "params")["value"],
        "image",
    );
    let image = image.replacen("registry.example.com", &reg.host, 1);
    assert_eq!(image, format!("{}/team/app:1.0", reg.host));
    let digest = reg.digest("team/app:1.0");
    let pipe_value = |e: &str| -> Option<String> {
        match e {
            "params.image" => Some(image.clone()),
            "tasks.build.results.IMAGE_DIGEST" => Some(digest.clone()),
            _ => None,
        }
    };
    // Workspaces as the pod has them: directories; the Secret's key as config.json.
    let mut ws: BTreeMap<String, PathBuf> = BTreeMap::new();
    for w in names(&task["workspaces"]) {
        let d = scratch.join("workspace").join(w);
        std::fs::create_dir_all(&d).unwrap();
        ws.insert(w.to_string(), d);
    }
    std::fs::write(
        ws["dockerconfig"].join("config.json"),
        shell::docker_config_json(&reg.host, USER, PASSWORD),
    )
    .unwrap();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for p in list(&task["params"], "params") {
        if let Some(d) = p["default"].as_str() {
            params.insert(str_of(&p["name"], "param").into(), d.into());
        }
    }
    for p in list(&vm["params"], "vm params") {
        let v = substitute(str_of(&p["value"], "value"), "$(", ")", &pipe_value);
        params.insert(str_of(&p["name"], "param").into(), v);
    }
    assert_eq!(params["IMAGE"], format!("{image}@{digest}"));
    let value = |e: &str| -> Option<String> {
        let parts: Vec<&str> = e.split('.').collect();
        match parts[..] {
            ["params", n] => params.get(n).cloned(),
            ["workspaces", w, "path"] => ws.get(w).map(|p| p.display().to_string()),
            _ => None,
        }
    };
    let steps = list(&task["steps"], "steps");
    assert_eq!(steps.len(), 1, "one step, d2v, is run here");
    let step = &steps[0];
    assert_eq!(step["image"], "$(params.D2V_IMAGE)");
    // The step's volumes (the emptyDir for TMPDIR) as directories too.
    let mounts: Vec<(String, PathBuf)> = list(&step["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            let d = scratch.join("volumes").join(str_of(&m["name"], "name"));
            std::fs::create_dir_all(&d).unwrap();
            (str_of(&m["mountPath"], "mountPath").to_string(), d)
        })
        .collect();
    let args: Vec<String> = list(&step["args"], "args")
        .iter()
        .map(|a| substitute(str_of(a, "arg"), "$(", ")", &value))
        .collect();
    let mut env = base_env(&scratch, &conf);
    for e in list(&step["env"], "env") {
        let v = substitute(str_of(&e["value"], "value"), "$(", ")", &value);
        env.push((str_of(&e["name"], "name").into(), remount(&v, &mounts)));
    }
    // As the step's user, the workspaces and volumes writable by the pod's fsGroup.
    let sc = &step["securityContext"];
    let fs_group = run["taskRunTemplate"]["podTemplate"]["securityContext"]["fsGroup"]
        .as_u64()
        .expect("the run's pods have an fsGroup");
    let user = (id_of(&sc["runAsUser"]), id_of(&sc["runAsGroup"]));
    let writable: Vec<&Path> = ["output", "cache"]
        .iter()
        .map(|w| ws[*w].as_path())
        .chain(mounts.iter().map(|(_, d)| d.as_path()))
        .collect();
    let cmd = pod_command(&scratch, &args, env, user, fs_group as u32, &writable);
    shell::run_ok(cmd, &format!("tekton step d2v {}", args.join(" ")));
    assert_pulled(&reg, "team/app");
    shell::assert_ova(&ws["output"].join(&params["OVA"]));
    assert_written_by(&ws["output"].join(&params["OVA"]), user.0);
    assert!(shell::cached_blobs(&ws["cache"]) >= 3, "nothing cached");
    let _ = std::fs::remove_dir_all(&scratch);
}

fn id_of(v: &Value) -> u32 {
    v.as_u64()
        .unwrap_or_else(|| panic!("a user or group id expected, found {v}")) as u32
}

/// `sh -ec` script: `N DIR1..DIRN COMMAND…` binds each DIR onto itself, remounts every other
/// mount (but /proc, /sys, /dev) read-only, checks that `/` and `/tmp` are, and runs COMMAND.
const READ_ONLY_ROOT: &str = r#"
p=$PATH
PATH=/usr/sbin:/usr/bin:/sbin:/bin
n=$1; shift
w=" "
while [ "$n" -gt 0 ]; do mount --bind "$1" "$1"; w="$w$1 "; shift; n=$((n - 1)); done
for m in $(awk '{print $5}' /proc/self/mountinfo); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  case "$w" in *" $m "*) continue;; esac
  mount -o remount,bind,ro "$m"
done
for f in /.d2v-rofs-check /tmp/.d2v-rofs-check; do
  if touch "$f" 2>/dev/null; then rm -f "$f"; echo "$f: the root filesystem is writable" >&2; exit 97; fi
done
PATH=$p
exec "$@"
"#;

/// `d2v ARGS` as the container runs it: with only `env` (and PATH, the image's directory of
/// d2v) and, when the test runs as root, as the container's user `uid:gid` with the pod's
/// `fs_group` (`setpriv`: no other groups, no capabilities, no privilege escalation), the
/// `writable` volumes owned by that group as Kubernetes makes them. Not as root, it runs as the
/// test's user (said on stderr). As root it also runs with a read-only root filesystem (see
/// [`READ_ONLY_ROOT`]), as the containers' `readOnlyRootFilesystem` says.
fn pod_command(
    scratch: &Path,
    args: &[String],
    env: Vec<(String, String)>,
    (uid, gid): (u32, u32),
    fs_group: u32,
    writable: &[&Path],
) -> Command {
    use std::os::unix::fs::PermissionsExt;
    // The binary where any user can run it (the checkout may be closed to others).
    let image_bin = scratch.join("image-bin");
    std::fs::create_dir_all(&image_bin).unwrap();
    let d2v = image_bin.join("d2v");
    if !d2v.exists() {
        std::fs::copy(testkit::fixtures::d2v_bin(env!("CARGO_BIN_EXE_d2v")), &d2v).unwrap();
        std::fs::set_permissions(&d2v, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        for d in writable {
            std::os::unix::fs::chown(d, Some(uid), Some(fs_group)).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o2775)).unwrap();
        }
        // readOnlyRootFilesystem: in a mount namespace of its own, every mount but the
        // writable volumes (bound onto themselves first) and /proc, /sys, /dev is remounted
        // read-only; then the user and groups change.
        let mut c = Command::new(testkit::require_tool("unshare", "util-linux"));
        c.args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-ec",
            READ_ONLY_ROOT,
            "sh",
        ])
        .arg(writable.len().to_string())
        .args(writable)
        .arg(testkit::require_tool("setpriv", "util-linux"))
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(format!("--groups={fs_group}"))
        .args(["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"])
        .arg(&d2v);
        c
    } else {
        eprintln!("NOTICE: not root: the pod's d2v runs as the test's user, not {uid}:{gid}");
        Command::new(&d2v)
    };
    cmd.args(args).env_clear().envs(env).env("PATH", &image_bin);
    cmd
}

/// When the test runs as root: `p` belongs to `uid`, the container's user that wrote it.
fn assert_written_by(p: &Path, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(std::fs::metadata(p).unwrap().uid(), uid, "{}", p.display());
    }
}

/// `v` with a container path under one of `mounts` (mountPath → host directory) moved to the
/// host directory.
fn remount(v: &str, mounts: &[(String, PathBuf)]) -> String {
    for (m, dir) in mounts {
        if let Ok(rest) = Path::new(v).strip_prefix(m) {
            return dir.join(rest).display().to_string();
        }
    }
    v.to_string()
}

// ---------------------------------------------------------------------------------------------
// Kubernetes Job fleet

#[test]
#[ignore = "installs PyYAML from PyPI into target/ (cargo xtask test runs it)"]
fn k8s_jobs_run_as_a_fleet() {
    let docs = yaml_docs(&recipe("k8s-job.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| str_of(&d["kind"], "kind")).collect();
    assert_eq!(
        kinds,
        ["PersistentVolumeClaim", "PersistentVolumeClaim", "Job"]
    );
    let job = &docs[2];
    let pvcs: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "PersistentVolumeClaim")
        .map(|d| str_of(&d["metadata"]["name"], "pvc"))
        .collect();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let containers = list(&pod["containers"], "containers");
    assert_eq!(containers.len(), 1, "one pod, one d2v, per image");
    let c = &containers[0];
    assert!(c.get("command").is_none(), "d2v's image's entrypoint runs");
    assert_unprivileged(&c["securityContext"], "the d2v container");
    // Volumes: the cache on a PVC (shared: ReadWriteMany), the OVAs on a PVC, the registry
    // credentials from a dockerconfigjson Secret as config.json, where DOCKER_CONFIG points.
    let volume = |mount_path: &str| -> &Value {
        let m = list(&c["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        by_name(&pod["volumes"], str_of(&m["name"], "name"), "volumes")
    };
    let env_of = |n: &str| str_of(&by_name(&c["env"], n, "env")["value"], n).to_string();
    let cache_claim = str_of(
        &volume("/cache")["persistentVolumeClaim"]["claimName"],
        "claim",
    );
    assert!(pvcs.contains(&cache_claim));
    let cache_pvc = docs
        .iter()
        .find(|d| d["metadata"]["name"] == cache_claim)
        .unwrap();
    assert_eq!(
        cache_pvc["spec"]["accessModes"],
        serde_json::json!(["ReadWriteMany"])
    );
    assert!(pvcs.contains(&str_of(
        &volume("/ovas")["persistentVolumeClaim"]["claimName"],
        "claim"
    )));
    let secret = &volume(&env_of("DOCKER_CONFIG"))["secret"];
    assert_eq!(
        secret["items"],
        serde_json::json!([{"key": ".dockerconfigjson", "path": "config.json"}])
    );
    assert!(volume(&env_of("TMPDIR")).get("emptyDir").is_some());

    // Two images, two Jobs made from this one (their own NAME and IMAGE), run at once: the
    // fleet, sharing one cache and one OVA volume.
    let scratch = testkit::scratch_dir("ci-k8s");
    let images = [("web", "team/web:2.1"), ("api", "team/api:1.4")];
    let (reg, conf) = registry_with(&scratch, &images.map(|(_, i)| i));
    let shared: BTreeMap<&str, PathBuf> = ["cache", "ovas", "docker-config"]
        .into_iter()
        .map(|v| {
            let d = scratch.join("volumes").join(v);
            std::fs::create_dir_all(&d).unwrap();
            (v, d)
        })
        .collect();
    std::fs::write(
        shared["docker-config"].join("config.json"),
        shell::docker_config_json(&reg.host, USER, PASSWORD),
    )
    .unwrap();
    let mut pods = Vec::new();
    for (name, image) in images {
        // The pod's mounts: the shared volumes, and its own emptyDir.
        let mut mounts = Vec::new();
        for m in list(&c["volumeMounts"], "volumeMounts") {
            let v = str_of(&m["name"], "name");
            let dir = shared.get(v).cloned().unwrap_or_else(|| {
                let d = scratch.join(format!("pod-{name}")).join(v);
                std::fs::create_dir_all(&d).unwrap();
                d
            });
            mounts.push((str_of(&m["mountPath"], "mountPath").to_string(), dir));
        }
        // The container's env, with this Job's NAME and IMAGE; $(VAR) in args as Kubernetes
        // expands them.
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for e in list(&c["env"], "env") {
            let n = str_of(&e["name"], "name");
            let v = match n {
                "IMAGE" => format!("{}/{image}", reg.host),
                "NAME" => name.to_string(),
                _ => str_of(&e["value"], n).to_string(),
            };
            vars.insert(n.into(), v);
        }
        let args: Vec<String> = list(&c["args"], "args")
            .iter()
            .map(|a| {
                let a = substitute(str_of(a, "arg"), "$(", ")", &|e| vars.get(e).cloned());
                remount(&a, &mounts)
            })
            .collect();
        let mut env = base_env(&scratch, &conf);
        for (k, v) in &vars {
            env.push((k.clone(), remount(v, &mounts)));
        }
        let psc = &pod["securityContext"];
        let user = (id_of(&psc["runAsUser"]), id_of(&psc["runAsGroup"]));
        let fs_group = id_of(&psc["fsGroup"]);
        let writable: Vec<&Path> = mounts
            .iter()
            .filter(|(_, d)| !d.ends_with("docker-config"))
            .map(|(_, d)| d.as_path())
            .collect();
        let cmd = pod_command(&scratch, &args, env, user, fs_group, &writable);
        let what = format!("job d2v-{name}: d2v {}", args.join(" "));
        pods.push(std::thread::spawn(move || {
            shell::run_ok(cmd, &what);
        }));
    }
    for p in pods {
        p.join().expect("a pod failed");
    }
    for (name, image) in images {
        assert_pulled(&reg, image.split(':').next().unwrap());
        shell::assert_ova(&shared["ovas"].join(format!("{name}.ova")));
        assert_written_by(&shared["ovas"].join(format!("{name}.ova")), 65532);
    }
    assert!(shell::cached_blobs(&shared["cache"]) >= 3, "nothing cached");
    let _ = std::fs::remove_dir_all(&scratch);
}
