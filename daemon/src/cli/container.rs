//! `strata container ...` and `strata volume ...`.

use anyhow::bail;
use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use strata_store::ContainerSummary;

use super::format::{ago, human_size, short_id, table};
use super::{n, print_body, print_json, s};
use crate::api::containers::CreateBody;
use crate::client::{Client, encode_query};

#[derive(Debug, Subcommand)]
pub(super) enum ContainerCmd {
    /// Create a container (a writable layer over an image)
    Create {
        /// Container name [default: strata_<id>]
        #[arg(long)]
        name: Option<String>,
        /// Bind mount or volume: SRC:DST[:ro|rw], or DST for an anonymous volume
        #[arg(short = 'v', long = "volume")]
        volumes: Vec<String>,
        /// type=bind|volume|tmpfs,source=,target=[,readonly]
        #[arg(long = "mount")]
        mounts: Vec<String>,
        /// KEY=VALUE added to the image's environment
        #[arg(short, long)]
        env: Vec<String>,
        /// Working directory inside the container
        #[arg(short, long)]
        workdir: Option<String>,
        /// user[:group] or uid[:gid]
        #[arg(short, long)]
        user: Option<String>,
        /// Overrides the image's entrypoint (one word; arguments go after the image)
        #[arg(long)]
        entrypoint: Option<String>,
        image: String,
        /// Command (overrides the image's)
        #[arg(trailing_var_arg = true)]
        cmd: Vec<String>,
    },
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls {
        /// Accepted for docker compatibility: strata lists every container
        #[arg(short, long)]
        all: bool,
        /// Show writable-layer and virtual sizes
        #[arg(short, long)]
        size: bool,
        /// Only ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a container
    Inspect { container: String },
    /// Mount a container's merged directory; prints its path
    Mount { container: String },
    /// Drop a mount reference (the last one unmounts)
    Unmount {
        container: String,
        #[arg(long)]
        all: bool,
    },
    /// Run a command inside the container
    Exec {
        /// KEY=VALUE for this command
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        workdir: Option<String>,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Files changed in the writable layer (A added, C changed, D deleted)
    Diff { container: String },
    /// Save the writable layer as a new image
    Commit {
        container: String,
        tag: Option<String>,
    },
    /// Remove containers
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        containers: Vec<String>,
        /// Unmount and kill running commands first
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum VolumeCmd {
    /// Create a volume (a random name when none is given)
    Create {
        name: Option<String>,
        /// KEY=VALUE
        #[arg(long)]
        label: Vec<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// dangling=true|false
        #[arg(short, long)]
        filter: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a volume
    Inspect { name: String },
    /// Remove volumes (refused while in use)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (--all: every unused volume)
    Prune {
        #[arg(short, long)]
        all: bool,
    },
}

fn q(v: &str) -> String {
    encode_query(v)
}

#[expect(clippy::too_many_lines, reason = "one short match arm per subcommand")]
pub(super) async fn container(
    client: &Client,
    cmd: ContainerCmd,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        ContainerCmd::Create {
            name,
            volumes,
            mounts,
            env,
            workdir,
            user,
            entrypoint,
            image,
            cmd,
        } => {
            let body = CreateBody {
                name,
                image,
                volumes,
                mounts,
                env,
                entrypoint: entrypoint.map(|e| vec![e]),
                cmd: (!cmd.is_empty()).then_some(cmd),
                workdir,
                user,
            };
            let v = client.post_json("/v1/containers", &body).await?;
            if json {
                return print_json(&v);
            }
            outln!("{}", s(&v, "id"));
            Ok(())
        }
        ContainerCmd::Ls {
            all: _,
            size,
            quiet,
        } => {
            if json {
                return print_body(&client.bytes(Method::GET, "/v1/containers").await?);
            }
            // Typed, not a `serde_json::Value`: with thousands of containers, building and
            // dropping a map per row was most of the command's time.
            let list: Vec<ContainerSummary> = client.json(Method::GET, "/v1/containers").await?;
            if quiet {
                for c in &list {
                    outln!("{}", short_id(&c.id.hex()));
                }
                return Ok(());
            }
            let mut header = vec!["CONTAINER ID", "IMAGE", "CREATED", "MOUNTED", "NAMES"];
            if size {
                header.push("SIZE");
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let mut row = vec![
                        short_id(&c.id.hex()),
                        c.image_name
                            .clone()
                            .unwrap_or_else(|| short_id(&c.image.to_string())),
                        ago(i64::try_from(c.created).unwrap_or(0)),
                        if c.mounted { "yes" } else { "no" }.to_owned(),
                        c.name.clone(),
                    ];
                    if size {
                        row.push(format!(
                            "{} (virtual {})",
                            human_size(c.rw_size.unwrap_or(0)),
                            human_size(c.virtual_size)
                        ));
                    }
                    row
                })
                .collect();
            out!("{}", table(&header, &rows));
            Ok(())
        }
        ContainerCmd::Inspect { container } => {
            let v = client
                .on_ref(Method::GET, "/v1/containers/inspect", &container, "")
                .await?;
            print_json(&v)
        }
        ContainerCmd::Mount { container } => {
            let v = client
                .on_ref(Method::POST, "/v1/containers/mount", &container, "")
                .await?;
            if json {
                return print_json(&v);
            }
            outln!("{}", s(&v, "path"));
            Ok(())
        }
        ContainerCmd::Unmount { container, all } => {
            let v = client
                .on_ref(
                    Method::POST,
                    "/v1/containers/unmount",
                    &container,
                    &format!("&all={all}"),
                )
                .await?;
            if json {
                return print_json(&v);
            }
            Ok(())
        }
        ContainerCmd::Exec {
            env,
            user,
            workdir,
            container,
            cmd,
        } => {
            let spec = json!({ "cmd": cmd, "env": env, "user": user, "workdir": workdir });
            let path = format!(
                "/v1/containers/exec?ref={}&spec={}",
                q(&container),
                q(&spec.to_string())
            );
            let code = client.exec(&path).await?;
            std::process::exit(code);
        }
        ContainerCmd::Diff { container } => {
            let v = client
                .on_ref(Method::GET, "/v1/containers/diff", &container, "")
                .await?;
            if json {
                return print_json(&v);
            }
            for change in v.as_array().into_iter().flatten() {
                outln!("{} {}", s(change, "kind"), s(change, "path"));
            }
            Ok(())
        }
        ContainerCmd::Commit { container, tag } => {
            let tag = tag
                .as_deref()
                .map_or_else(String::new, |t| format!("&tag={}", q(t)));
            let path = format!("/v1/containers/commit?ref={}{tag}", q(&container));
            let v = client.value(Method::POST, &path).await?;
            if json {
                return print_json(&v);
            }
            outln!("{}", s(&v, "id"));
            Ok(())
        }
        ContainerCmd::Rm { containers, force } => {
            let single = containers.len() == 1;
            let mut failed = 0;
            for c in &containers {
                match client
                    .on_ref(
                        Method::DELETE,
                        "/v1/containers",
                        c,
                        &format!("&force={force}"),
                    )
                    .await
                {
                    Ok(v) => outln!("{}", s(&v, "name")),
                    Err(e) if single => return Err(e.into()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("strata: error: {c}: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} container(s) not removed", containers.len());
            }
            Ok(())
        }
    }
}

pub(super) async fn volume(client: &Client, cmd: VolumeCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create { name, label } => {
            let mut labels = serde_json::Map::new();
            for l in &label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                labels.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let v = client
                .post_json("/v1/volumes", &json!({ "name": name, "labels": labels }))
                .await?;
            if json {
                return print_json(&v);
            }
            outln!("{}", s(&v, "name"));
            Ok(())
        }
        VolumeCmd::Ls { filter, quiet } => {
            let path = match filter.as_deref() {
                None => "/v1/volumes".to_owned(),
                Some(f) => match f.split_once('=') {
                    Some(("dangling", v @ ("true" | "false" | "1" | "0"))) => {
                        format!("/v1/volumes?dangling={}", v == "true" || v == "1")
                    }
                    _ => bail!("invalid filter {f:?}: only dangling=true|false is supported"),
                },
            };
            let v = client.value(Method::GET, &path).await?;
            if json {
                return print_json(&v);
            }
            let list = v.as_array().cloned().unwrap_or_default();
            if quiet {
                for vol in &list {
                    outln!("{}", s(vol, "name"));
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|vol| vec![s(vol, "driver").to_owned(), s(vol, "name").to_owned()])
                .collect();
            out!("{}", table(&["DRIVER", "VOLUME NAME"], &rows));
            Ok(())
        }
        VolumeCmd::Inspect { name } => {
            let v = client
                .value(
                    Method::GET,
                    &format!("/v1/volumes/inspect?name={}", q(&name)),
                )
                .await?;
            print_json(&v)
        }
        VolumeCmd::Rm { names } => {
            let single = names.len() == 1;
            let mut failed = 0;
            for name in &names {
                match client
                    .value(Method::DELETE, &format!("/v1/volumes?name={}", q(name)))
                    .await
                {
                    Ok(_) => outln!("{name}"),
                    Err(e) if single => return Err(e.into()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("strata: error: {name}: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} volume(s) not removed", names.len());
            }
            Ok(())
        }
        VolumeCmd::Prune { all } => {
            let v = client
                .value(Method::POST, &format!("/v1/volumes/prune?all={all}"))
                .await?;
            if json {
                return print_json(&v);
            }
            outln!("Deleted Volumes:");
            for name in v["removed"].as_array().into_iter().flatten() {
                outln!("{}", name.as_str().unwrap_or_default());
            }
            outln!(
                "\nTotal reclaimed space: {}",
                human_size(n(&v, "reclaimed_bytes"))
            );
            Ok(())
        }
    }
}
