//! `d2v inspect` and `d2v export`: read-only views of an image.

use std::io::{self, Write};
use std::path::Path;

use super::build::check_output_file;
use super::{appvm, flatten, io_err, print_stdout, Error, Log};
use crate::cli::SourceArgs;
use crate::source::Image;
use crate::tree::Tree;
use crate::{export, inspect, output};

pub(super) fn inspect(
    source: &str,
    kernel_from: Option<&str>,
    src: &SourceArgs,
    json: bool,
    log: &Log,
) -> Result<(), Error> {
    let (image, mut tree, warnings) = flatten(source, src, json, log)?;
    let report = inspect::boot_report(&tree);
    let plan = vm_plan(&image, &mut tree, kernel_from, src, json, log)?;
    let init_name = format!("{:?}", report.init).to_lowercase();
    if json {
        let v = serde_json::json!({
            "reference": image.reference,
            "pulled_from": image.pulled_from,
            "endpoint_failures": image.endpoint_failures,
            "warnings": image.warnings.iter().chain(&warnings).collect::<Vec<_>>(),
            "manifest_digest": image.manifest_digest,
            "index_digest": image.index_digest,
            "config_digest": image.config_digest,
            "platform": image.platform.to_string(),
            "platforms_available": image.platforms_available.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "layers": image.layers.iter().map(|l| serde_json::json!({
                "digest": l.digest, "size": l.size, "media_type": l.media_type, "diff_id": l.diff_id,
            })).collect::<Vec<_>>(),
            "config": {
                "entrypoint": image.config.config.entrypoint,
                "cmd": image.config.config.cmd,
                "env": image.config.config.env,
                "user": image.config.config.user,
                "working_dir": image.config.config.working_dir,
            },
            "bootability": report,
            "vm": plan.map(|p| p.json(&init_name)),
        });
        print_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("JSON of plain values")
        ))?;
        return Ok(());
    }
    let mut out = String::new();
    out += &format!("Reference:       {}\n", image.reference);
    out += &format!("Manifest digest: {}\n", image.manifest_digest);
    if let Some(ix) = &image.index_digest {
        out += &format!("Index digest:    {ix}\n");
    }
    let plats: Vec<String> = image
        .platforms_available
        .iter()
        .map(|p| p.to_string())
        .collect();
    out += &format!(
        "Platform:        {} (available: {})\n",
        image.platform,
        plats.join(", ")
    );
    out += "Layers:\n";
    for l in &image.layers {
        out += &format!("  {}  {:>12}  {}\n", l.digest, l.size, l.media_type);
    }
    let c = &image.config.config;
    out += &format!(
        "Entrypoint:      {:?}\n",
        c.entrypoint.clone().unwrap_or_default()
    );
    out += &format!("Cmd:             {:?}\n", c.cmd.clone().unwrap_or_default());
    out += "Env:\n";
    for e in c.env.iter().flatten() {
        out += &format!("  {e}\n");
    }
    out += &format!("Bootability:\n{report}");
    if let Some(p) = plan {
        out += &p.text(&init_name);
    }
    print_stdout(&out)?;
    Ok(())
}

/// What the VM would run, when that differs from booting the image as it is: with
/// `--kernel-from`, or for an image without an init system (d2v's init would run it).
fn vm_plan(
    image: &Image,
    tree: &mut Tree,
    kernel_from: Option<&str>,
    src: &SourceArgs,
    json: bool,
    log: &Log,
) -> Result<Option<appvm::VmPlan>, Error> {
    if kernel_from.is_none() && inspect::init_system(tree).1.is_some() {
        return Ok(None);
    }
    let app = crate::cli::AppArgs::defaults(kernel_from);
    let hostname = crate::guest::default_hostname(&image.reference);
    let inputs = appvm::PlanInputs {
        app: &app,
        src,
        controller: crate::cli::Controller::Pvscsi,
        hostname: &hostname,
        json,
        install: false,
    };
    appvm::prepare(image, tree, &inputs, log).map(Some)
}

pub(super) fn export(source: &str, output: &str, src: &SourceArgs, log: &Log) -> Result<(), Error> {
    if output != "-" {
        check_output_file(Path::new(output))?;
    }
    let (_image, tree, _logged) = flatten(
        source,
        src,
        false,
        &Log::new(log.is_quiet() || output == "-", false),
    )?;
    if output == "-" {
        let stdout = io::stdout();
        let mut w = io::BufWriter::new(stdout.lock());
        export::write_tar(&tree, &mut w).map_err(io_err("writing the tar to stdout"))?;
        w.flush().map_err(io_err("writing the tar to stdout"))?;
        return Ok(());
    }
    let path = Path::new(output);
    let mut f =
        output::atomic::AtomicFile::create(path).map_err(io_err(format!("creating {output}")))?;
    {
        let mut w = io::BufWriter::new(f.file_mut());
        export::write_tar(&tree, &mut w).map_err(io_err(format!("writing {output}")))?;
        w.flush().map_err(io_err(format!("writing {output}")))?;
    }
    f.commit().map_err(io_err(format!("committing {output}")))?;
    log.step(format!("wrote {output}"));
    Ok(())
}
