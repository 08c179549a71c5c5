//! Debian's `docker-registry` on 127.0.0.1 (free port, plain HTTP, storage in a given dir),
//! for the demo and benchmarks. (testkit::registry is the tests' richer version.)

use crate::bail;
use crate::util::{exec, Result};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    pub addr: String,
    child: Child,
}

impl Registry {
    /// Starts a registry whose storage and config live in `dir` (emptied first).
    pub fn start(dir: &Path) -> Result<Registry> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("data"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )?;
        let log = fs::File::create(dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e} (install docker-registry)"))?;
        let mut reg = Registry { addr, child };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if reg.get_status("/v2/") == Some(200) {
                println!(
                    "registry on http://{} (storage {})",
                    reg.addr,
                    dir.display()
                );
                return Ok(reg);
            }
            if let Some(status) = reg.child.try_wait()? {
                bail!(
                    "docker-registry exited ({status}); see {}",
                    dir.join("registry.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("docker-registry did not answer on {} within 20 s", reg.addr)
    }

    fn get_status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        let head = String::from_utf8_lossy(&buf[..n]);
        head.split_whitespace().nth(1)?.parse().ok()
    }

    /// `skopeo copy SRC docker://ADDR/NAME` (plain HTTP).
    pub fn push(&self, src: &str, name: &str) -> Result<String> {
        let dest = format!("{}/{name}", self.addr);
        exec(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            src,
            &format!("docker://{dest}"),
        ]))?;
        Ok(dest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
