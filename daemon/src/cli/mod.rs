//! `strata`: docker-like verbs, human tables, `--json` for scripts, one-line errors.

/// `println!` that hands a failed write back as a [`StdoutError`] instead of panicking:
/// `strata ... | head` closes the pipe early, and [`main`] then ends quietly.
macro_rules! outln {
    ($($arg:tt)*) => {
        {
            use ::std::io::Write as _;
            ::std::writeln!(::std::io::stdout().lock(), $($arg)*).map_err($crate::cli::StdoutError)?
        }
    };
}

/// `print!` as [`outln!`] is `println!`.
macro_rules! out {
    ($($arg:tt)*) => {
        {
            use ::std::io::Write as _;
            ::std::write!(::std::io::stdout().lock(), $($arg)*).map_err($crate::cli::StdoutError)?
        }
    };
}

mod container;
mod format;
mod stats;

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;
use strata_store::DiskUsage;

use crate::api::images::ImportEvent;
use crate::client::{Client, ClientError, empty, encode_query};
use crate::config::DEFAULT_SOCKET;
use format::{ago, short_id, table};
pub use format::{human_size, parse_rfc3339};

/// Command-line client for stratad.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    /// stratad's API socket
    #[arg(long, global = true, env = "STRATA_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of tables (read commands)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage images
    #[command(subcommand)]
    Image(ImageCmd),
    /// Inspect and export layers
    #[command(subcommand)]
    Layer(LayerCmd),
    /// Manage containers
    #[command(subcommand)]
    Container(container::ContainerCmd),
    /// Manage volumes
    #[command(subcommand)]
    Volume(container::VolumeCmd),
    /// Store-wide information
    #[command(subcommand)]
    System(SystemCmd),
    /// Live copy-on-write cost per container (copy-ups/s, bytes/s, p99 latency, sizes)
    Stats {
        /// Print one snapshot (rates over one second) and exit
        #[arg(long)]
        no_stream: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Import a `docker save` archive or an OCI image layout tar (FILE, or - for stdin)
    Import {
        file: String,
        /// No progress bar
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images
    #[command(alias = "list")]
    Ls {
        /// Only image ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's config and layers
    Inspect { reference: String },
    /// Mount a read-only view of an image; prints its path
    Mount { reference: String },
    /// Drop one mount reference (the last one unmounts)
    Unmount {
        reference: String,
        /// Drop every reference
        #[arg(long)]
        all: bool,
    },
    /// Point a new name at an image
    Tag { source: String, target: String },
    /// Remove images (a tag of a multi-tagged image is only untagged)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
        /// Also unmount views
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LayerCmd {
    /// List stored layers
    Ls,
    /// Show a layer
    Inspect { id: String },
    /// Write a layer as a tar stream
    Export {
        id: String,
        /// Write to FILE instead of stdout
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCmd {
    /// Store location, driver, counts and filesystem space
    Info,
    /// Disk usage
    Df {
        /// Per-image detail with shared and unique bytes
        #[arg(short, long)]
        verbose: bool,
    },
    /// Check the store's invariants; exits nonzero while findings remain
    Fsck {
        /// Fix what can be fixed safely, and say what was done
        #[arg(long)]
        repair: bool,
        /// Also recompute every layer's digest (its `DiffID`) from its files (reads them all)
        #[arg(long)]
        verify: bool,
    },
}

/// Parses arguments, runs the command, and reports failure as one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<StdoutError>()
                .is_some_and(|StdoutError(io)| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::from(128 + 13)
        }
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A write to standard output failed. [`main`] ends quietly when the reader went away
/// (`strata container ls | head`), with the status a shell gives a process SIGPIPE ended, as
/// docker and C tools exit there.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output")]
struct StdoutError(#[source] std::io::Error);

/// The daemon's JSON as it came, unparsed: listings of thousands of rows.
fn print_body(body: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(body)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(StdoutError)?;
    Ok(())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .map_err(StdoutError)?;
    Ok(())
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One table row per element of the JSON array `v[key]`.
fn rows_of(v: &Value, key: &str, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(row)
        .collect()
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket);
    let json = cli.json;
    match cli.command {
        Command::Image(cmd) => image(&client, cmd, json).await,
        Command::Layer(cmd) => layer(&client, cmd, json).await,
        Command::Container(cmd) => container::container(&client, cmd, json).await,
        Command::Volume(cmd) => container::volume(&client, cmd, json).await,
        Command::System(cmd) => system(&client, cmd, json).await,
        Command::Stats { no_stream } => stats::stats(&client, no_stream, json).await,
    }
}

async fn image(client: &Client, cmd: ImageCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Import { file, quiet } => import(client, &file, quiet, json).await,
        ImageCmd::Ls { quiet } => image_ls(client, quiet, json).await,
        ImageCmd::Inspect { reference } => {
            let v = client
                .on_ref(Method::GET, "/v1/images/inspect", &reference, "")
                .await?;
            if json {
                return print_json(&v);
            }
            print_image_details(&v)?;
            Ok(())
        }
        ImageCmd::Mount { reference } => {
            let v = client
                .on_ref(Method::POST, "/v1/images/mount", &reference, "")
                .await?;
            if json {
                return print_json(&v);
            }
            outln!("{}", s(&v, "path"));
            Ok(())
        }
        ImageCmd::Unmount { reference, all } => {
            let path = format!(
                "/v1/images/unmount?ref={}&all={all}",
                encode_query(&reference)
            );
            let v = client.value(Method::POST, &path).await?;
            if json {
                return print_json(&v);
            }
            let left = n(&v, "remaining");
            if left > 0 {
                outln!("{reference}: still mounted ({left} reference(s) left)");
            }
            Ok(())
        }
        ImageCmd::Tag { source, target } => {
            let path = format!(
                "/v1/images/tag?source={}&target={}",
                encode_query(&source),
                encode_query(&target)
            );
            let v = client.value(Method::POST, &path).await?;
            if json {
                return print_json(&v);
            }
            Ok(())
        }
        ImageCmd::Rm { references, force } => {
            let single = references.len() == 1;
            let mut failed = 0;
            let mut results = Vec::new();
            for reference in &references {
                let path = format!("/v1/images?ref={}&force={force}", encode_query(reference));
                match client.value(Method::DELETE, &path).await {
                    Ok(v) => {
                        if !json {
                            for t in v
                                .get("untagged")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                outln!("Untagged: {}", t.as_str().unwrap_or_default());
                            }
                            if let Some(id) = v.get("deleted").and_then(Value::as_str) {
                                outln!("Deleted: {id}");
                            }
                            for l in v
                                .get("deleted_layers")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                outln!("Deleted layer: {}", l.as_str().unwrap_or_default());
                            }
                        }
                        results.push(v);
                    }
                    Err(e) if single => return Err(e.into()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("strata: error: {reference}: {e}");
                    }
                }
            }
            if json {
                print_json(&Value::Array(results))?;
            }
            if failed > 0 {
                bail!("{failed} of {} image(s) not removed", references.len());
            }
            Ok(())
        }
    }
}

async fn image_ls(client: &Client, quiet: bool, json: bool) -> anyhow::Result<()> {
    let images = client.value(Method::GET, "/v1/images").await?;
    let list = images.as_array().cloned().unwrap_or_default();
    if json {
        return print_json(&images);
    }
    if quiet {
        for img in &list {
            outln!("{}", short_id(s(img, "id")));
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for img in &list {
        let created = img
            .get("created")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)
            .map_or_else(|| "N/A".to_owned(), ago);
        let tags: Vec<&str> = img
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) => (r.to_owned(), tag.to_owned()),
                    None => ((*t).to_owned(), String::new()),
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                short_id(s(img, "id")),
                created.clone(),
                human_size(n(img, "size")),
                human_size(n(img, "shared_size")),
                human_size(n(img, "unique_size")),
            ]);
        }
    }
    out!(
        "{}",
        table(
            &[
                "REPOSITORY",
                "TAG",
                "IMAGE ID",
                "CREATED",
                "SIZE",
                "SHARED",
                "UNIQUE"
            ],
            &rows
        )
    );
    Ok(())
}

fn print_image_details(v: &Value) -> anyhow::Result<()> {
    let tags: Vec<&str> = v
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let config = v.get("config").cloned().unwrap_or(Value::Null);
    let list = |key: &str| -> String {
        match config.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    };
    outln!("Id:           {}", s(v, "id"));
    outln!(
        "Tags:         {}",
        if tags.is_empty() {
            "<none>".to_owned()
        } else {
            tags.join(", ")
        }
    );
    outln!("Created:      {}", s(&config, "created"));
    outln!(
        "Platform:     {}/{}",
        s(&config, "os"),
        s(&config, "architecture")
    );
    outln!("Size:         {}", human_size(n(v, "size")));
    outln!("Entrypoint:   {}", list("entrypoint"));
    outln!("Cmd:          {}", list("cmd"));
    outln!("WorkingDir:   {}", s(&config, "working_dir"));
    outln!("User:         {}", s(&config, "user"));
    outln!("Env:");
    for e in config
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        outln!("  {}", e.as_str().unwrap_or_default());
    }
    if let Some(labels) = config
        .get("labels")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
    {
        outln!("Labels:");
        for (k, val) in labels {
            outln!("  {k}={}", val.as_str().unwrap_or_default());
        }
    }
    if let Some(path) = v.get("view_path").and_then(Value::as_str) {
        outln!(
            "Mounted at:   {path} ({} reference(s))",
            n(v, "view_mounts")
        );
    }
    let rows = rows_of(v, "layers", |l| {
        vec![
            s(l, "diff_id").to_owned(),
            s(l, "chain_id").to_owned(),
            human_size(n(l, "size")),
        ]
    });
    outln!("Layers:");
    out!("{}", table(&["DIFF ID", "CHAIN ID", "SIZE"], &rows));
    Ok(())
}

/// `image import FILE|-`: the daemon reads the archive itself, from a descriptor this process
/// opened (with the caller's permissions) and hands over: no copy through the socket.
async fn import(client: &Client, file: &str, quiet: bool, json: bool) -> anyhow::Result<()> {
    let opened = if file == "-" {
        if std::io::stdin().is_terminal() {
            bail!("refusing to read an archive from a terminal: pipe one in, or name a file");
        }
        None
    } else {
        Some(std::fs::File::open(file).with_context(|| format!("opening {file}"))?)
    };
    let total = opened
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len());
    let bar = if quiet || json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = total.map_or_else(
            indicatif::ProgressBar::no_length,
            indicatif::ProgressBar::new,
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:20!} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("Loading");
        bar
    };
    let progress = bar.clone();
    let stdin = std::io::stdin();
    let archive = opened.as_ref().map_or_else(|| stdin.as_fd(), AsFd::as_fd);
    let outcome = client
        .import_fd(archive, move |event| {
            if let ImportEvent::Progress {
                archive_bytes,
                layers_done,
                ..
            } = event
            {
                progress.set_position(*archive_bytes);
                progress.set_message(format!("{layers_done} layer(s) done"));
            }
        })
        .await;
    bar.finish_and_clear();
    let images = match outcome {
        Ok(images) => images,
        Err(ClientError::Api { message, .. }) => bail!("import of {file} failed: {message}"),
        Err(e) => return Err(e.into()),
    };
    if json {
        return print_json(&serde_json::to_value(&images)?);
    }
    for img in &images {
        if img.tags.is_empty() {
            outln!("Loaded image ID: {}", img.id);
        }
        for tag in &img.tags {
            outln!("Loaded image: {tag}");
        }
        if !quiet {
            outln!("  {} layer(s), {} new", img.layers, img.new_layers);
        }
    }
    Ok(())
}

async fn layer(client: &Client, cmd: LayerCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        LayerCmd::Ls => {
            let layers = client.value(Method::GET, "/v1/layers").await?;
            if json {
                return print_json(&layers);
            }
            let rows: Vec<Vec<String>> = layers
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    vec![
                        short_id(s(l, "chain_id")),
                        short_id(s(l, "diff_id")),
                        l.get("parent")
                            .and_then(Value::as_str)
                            .map_or_else(|| "-".to_owned(), short_id),
                        human_size(n(l, "size")),
                        n(l, "files").to_string(),
                        n(l, "images").to_string(),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &["CHAIN ID", "DIFF ID", "PARENT", "SIZE", "FILES", "IMAGES"],
                    &rows
                )
            );
            Ok(())
        }
        LayerCmd::Inspect { id } => {
            let v = client
                .value(
                    Method::GET,
                    &format!("/v1/layers/inspect?id={}", encode_query(&id)),
                )
                .await?;
            print_json(&v)
        }
        LayerCmd::Export { id, output } => {
            let mut out: Box<dyn Write> = if let Some(path) = &output {
                Box::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )
            } else {
                if std::io::stdout().is_terminal() {
                    bail!(
                        "refusing to write a tar stream to a terminal; redirect stdout or use -o FILE"
                    );
                }
                Box::new(std::io::stdout().lock())
            };
            let response = client
                .send(
                    Method::GET,
                    &format!("/v1/layers/export?id={}", encode_query(&id)),
                    empty(),
                )
                .await?;
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.with_context(|| format!("export of layer {id} was cut short"))?;
                if let Some(data) = frame.data_ref() {
                    out.write_all(data)
                        .map_err(|e| output_error(e, output.as_deref()))?;
                }
            }
            out.flush()
                .map_err(|e| output_error(e, output.as_deref()))?;
            Ok(())
        }
    }
}

/// A failed write of `layer export`'s tar: to `-o FILE`, or to standard output.
fn output_error(e: std::io::Error, file: Option<&std::path::Path>) -> anyhow::Error {
    match file {
        Some(path) => anyhow::Error::new(e).context(format!("writing {}", path.display())),
        None => StdoutError(e).into(),
    }
}

/// `system fsck`: a table of findings (or the report as JSON), then an error while any
/// finding is not repaired, so that scripts can rely on the exit code.
async fn fsck(client: &Client, repair: bool, verify: bool, json: bool) -> anyhow::Result<()> {
    let v = client
        .post_json(
            "/v1/system/fsck",
            &serde_json::json!({ "repair": repair, "verify": verify }),
        )
        .await?;
    let rows = rows_of(&v, "findings", |f| {
        let action = s(f, "repair");
        let done = match (f.get("repaired").and_then(Value::as_bool), action) {
            (Some(true), _) => format!("repaired: {action}"),
            (_, "") => "none safe; see the problem".to_owned(),
            (_, action) if repair => format!("not repaired: {action}"),
            (_, action) => format!("--repair would {action}"),
        };
        vec![
            s(f, "check").to_owned(),
            s(f, "object").to_owned(),
            s(f, "problem").to_owned(),
            done,
        ]
    });
    if json {
        print_json(&v)?;
    } else {
        if !rows.is_empty() {
            out!(
                "{}",
                table(&["CHECK", "OBJECT", "PROBLEM", "REPAIR"], &rows)
            );
        }
        outln!(
            "checked {} layers, {} images, {} containers, {} volumes: {} finding(s)",
            n(&v, "layers"),
            n(&v, "images"),
            n(&v, "containers"),
            n(&v, "volumes"),
            rows.len()
        );
        if verify {
            outln!(
                "verified the DiffID of {} layer(s)",
                n(&v, "verified_layers")
            );
            for why in v
                .get("unverifiable_layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                outln!("  not verifiable: {}", why.as_str().unwrap_or_default());
            }
        }
    }
    let outstanding = v
        .get("findings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get("repaired").and_then(Value::as_bool) != Some(true))
        .count();
    if outstanding > 0 {
        anyhow::bail!(
            "{outstanding} finding(s) not repaired{}",
            if repair {
                ""
            } else {
                " (--repair fixes what is safe to fix)"
            }
        );
    }
    Ok(())
}

async fn system(client: &Client, cmd: SystemCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        SystemCmd::Info => {
            let v = client.value(Method::GET, "/v1/info").await?;
            if json {
                return print_json(&v);
            }
            outln!("Root:            {}", s(&v, "root"));
            outln!("Storage driver:  {}", s(&v, "driver"));
            outln!("Overlay mounts:  {}", s(&v, "overlay_mount_api"));
            outln!("Schema version:  {}", n(&v, "schema_version"));
            outln!("Images:          {}", n(&v, "images"));
            outln!("Layers:          {}", n(&v, "layers"));
            outln!("Containers:      {}", n(&v, "containers"));
            outln!("Volumes:         {}", n(&v, "volumes"));
            outln!(
                "Filesystem:      {} of {} available, {} of {} inodes free",
                human_size(n(&v, "fs_avail_bytes")),
                human_size(n(&v, "fs_size_bytes")),
                n(&v, "fs_files_free"),
                n(&v, "fs_files")
            );
            Ok(())
        }
        SystemCmd::Fsck { repair, verify } => fsck(client, repair, verify, json).await,
        SystemCmd::Df { verbose } => {
            if json {
                return print_body(&client.bytes(Method::GET, "/v1/system/df").await?);
            }
            // Typed, not a `serde_json::Value`: a row per container made the map-building
            // most of the command's time.
            let usage: DiskUsage = client.json(Method::GET, "/v1/system/df").await?;
            print_df(&usage, verbose)?;
            Ok(())
        }
    }
}

/// `system df` as docker prints it; `-v` adds a table per kind.
fn print_df(usage: &DiskUsage, verbose: bool) -> anyhow::Result<()> {
    let rows = vec![
        vec![
            "Images".into(),
            usage.images.to_string(),
            usage.images_active.to_string(),
            human_size(usage.layers_size),
            human_size(usage.reclaimable),
        ],
        vec![
            "Containers".into(),
            usage.containers.to_string(),
            usage.containers_active.to_string(),
            human_size(usage.containers_rw_bytes),
            "0B".into(),
        ],
        vec![
            "Local Volumes".into(),
            usage.volumes.to_string(),
            usage.volumes_active.to_string(),
            human_size(usage.volumes_bytes),
            "0B".into(),
        ],
    ];
    let header = ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"];
    out!("{}", table(&header, &rows));
    if !verbose {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = usage
        .image_details
        .iter()
        .map(|img| {
            let (repo, tag) = img
                .tags
                .first()
                .map_or(("<none>", "<none>"), |t| (t.repository(), t.tag()));
            vec![
                repo.to_owned(),
                tag.to_owned(),
                short_id(&img.id.to_string()),
                human_size(img.size),
                human_size(img.shared_size),
                human_size(img.unique_size),
                img.containers.to_string(),
            ]
        })
        .collect();
    let header = [
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
    ];
    out!("\nImages space usage:\n\n{}", table(&header, &rows));
    let rows: Vec<Vec<String>> = usage
        .container_details
        .iter()
        .map(|c| {
            vec![
                short_id(&c.id.hex()),
                c.image_name.clone().unwrap_or_else(|| "<none>".to_owned()),
                human_size(c.rw_size.unwrap_or(0)),
                human_size(c.virtual_size),
                ago(i64::try_from(c.created).unwrap_or(0)),
                c.name.clone(),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "SIZE",
        "VIRTUAL SIZE",
        "CREATED",
        "NAMES",
    ];
    out!("\nContainers space usage:\n\n{}", table(&header, &rows));
    let rows: Vec<Vec<String>> = usage
        .volume_details
        .iter()
        .map(|vol| {
            vec![
                vol.name.clone(),
                vol.users.to_string(),
                human_size(vol.size.unwrap_or(0)),
            ]
        })
        .collect();
    let header = ["VOLUME NAME", "LINKS", "SIZE"];
    out!("\nLocal Volumes space usage:\n\n{}", table(&header, &rows));
    Ok(())
}
