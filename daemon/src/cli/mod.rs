//! `strata`: docker-like verbs, human tables, `--json` for scripts, one-line errors.

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
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
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
            print_image_details(&v);
            Ok(())
        }
        ImageCmd::Mount { reference } => {
            let v = client
                .on_ref(Method::POST, "/v1/images/mount", &reference, "")
                .await?;
            if json {
                return print_json(&v);
            }
            println!("{}", s(&v, "path"));
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
                println!("{reference}: still mounted ({left} reference(s) left)");
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
                                println!("Untagged: {}", t.as_str().unwrap_or_default());
                            }
                            if let Some(id) = v.get("deleted").and_then(Value::as_str) {
                                println!("Deleted: {id}");
                            }
                            for l in v
                                .get("deleted_layers")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                println!("Deleted layer: {}", l.as_str().unwrap_or_default());
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
            println!("{}", short_id(s(img, "id")));
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
    print!(
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

fn print_image_details(v: &Value) {
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
    println!("Id:           {}", s(v, "id"));
    println!(
        "Tags:         {}",
        if tags.is_empty() {
            "<none>".to_owned()
        } else {
            tags.join(", ")
        }
    );
    println!("Created:      {}", s(&config, "created"));
    println!(
        "Platform:     {}/{}",
        s(&config, "os"),
        s(&config, "architecture")
    );
    println!("Size:         {}", human_size(n(v, "size")));
    println!("Entrypoint:   {}", list("entrypoint"));
    println!("Cmd:          {}", list("cmd"));
    println!("WorkingDir:   {}", s(&config, "working_dir"));
    println!("User:         {}", s(&config, "user"));
    println!("Env:");
    for e in config
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!("  {}", e.as_str().unwrap_or_default());
    }
    if let Some(labels) = config
        .get("labels")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
    {
        println!("Labels:");
        for (k, val) in labels {
            println!("  {k}={}", val.as_str().unwrap_or_default());
        }
    }
    if let Some(path) = v.get("view_path").and_then(Value::as_str) {
        println!(
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
    println!("Layers:");
    print!("{}", table(&["DIFF ID", "CHAIN ID", "SIZE"], &rows));
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
            println!("Loaded image ID: {}", img.id);
        }
        for tag in &img.tags {
            println!("Loaded image: {tag}");
        }
        if !quiet {
            println!("  {} layer(s), {} new", img.layers, img.new_layers);
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
            print!(
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
                    out.write_all(data)?;
                }
            }
            out.flush()?;
            Ok(())
        }
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
            print!(
                "{}",
                table(&["CHECK", "OBJECT", "PROBLEM", "REPAIR"], &rows)
            );
        }
        println!(
            "checked {} layers, {} images, {} containers, {} volumes: {} finding(s)",
            n(&v, "layers"),
            n(&v, "images"),
            n(&v, "containers"),
            n(&v, "volumes"),
            rows.len()
        );
        if verify {
            println!(
                "verified the DiffID of {} layer(s)",
                n(&v, "verified_layers")
            );
            for why in v
                .get("unverifiable_layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("  not verifiable: {}", why.as_str().unwrap_or_default());
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
            println!("Root:            {}", s(&v, "root"));
            println!("Storage driver:  {}", s(&v, "driver"));
            println!("Overlay mounts:  {}", s(&v, "overlay_mount_api"));
            println!("Schema version:  {}", n(&v, "schema_version"));
            println!("Images:          {}", n(&v, "images"));
            println!("Layers:          {}", n(&v, "layers"));
            println!("Containers:      {}", n(&v, "containers"));
            println!("Volumes:         {}", n(&v, "volumes"));
            println!(
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
            let v = client.value(Method::GET, "/v1/system/df").await?;
            if json {
                return print_json(&v);
            }
            let images = n(&v, "images");
            let rows = vec![
                vec![
                    "Images".into(),
                    images.to_string(),
                    n(&v, "images_active").to_string(),
                    human_size(n(&v, "layers_size")),
                    human_size(n(&v, "reclaimable")),
                ],
                vec![
                    "Containers".into(),
                    n(&v, "containers").to_string(),
                    n(&v, "containers_active").to_string(),
                    human_size(n(&v, "containers_rw_bytes")),
                    "0B".into(),
                ],
                vec![
                    "Local Volumes".into(),
                    n(&v, "volumes").to_string(),
                    n(&v, "volumes_active").to_string(),
                    human_size(n(&v, "volumes_bytes")),
                    "0B".into(),
                ],
            ];
            print!(
                "{}",
                table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows)
            );
            if verbose {
                println!("\nImages space usage:\n");
                let rows = rows_of(&v, "image_details", |img| {
                    let tag = img
                        .get("tags")
                        .and_then(Value::as_array)
                        .and_then(|t| t.first())
                        .and_then(Value::as_str)
                        .unwrap_or("<none>:<none>");
                    let (repo, tag) = tag.rsplit_once(':').unwrap_or((tag, ""));
                    vec![
                        repo.to_owned(),
                        tag.to_owned(),
                        short_id(s(img, "id")),
                        human_size(n(img, "size")),
                        human_size(n(img, "shared_size")),
                        human_size(n(img, "unique_size")),
                        n(img, "containers").to_string(),
                    ]
                });
                print!(
                    "{}",
                    table(
                        &[
                            "REPOSITORY",
                            "TAG",
                            "IMAGE ID",
                            "SIZE",
                            "SHARED SIZE",
                            "UNIQUE SIZE",
                            "CONTAINERS"
                        ],
                        &rows
                    )
                );
                print_df_details(&v);
            }
            Ok(())
        }
    }
}

fn print_df_details(v: &Value) {
    println!("\nContainers space usage:\n");
    let rows = rows_of(v, "container_details", |c| {
        vec![
            s(c, "id").chars().take(12).collect(),
            c.get("image_name")
                .and_then(Value::as_str)
                .unwrap_or("<none>")
                .to_owned(),
            human_size(n(c, "rw_size")),
            human_size(n(c, "virtual_size")),
            ago(i64::try_from(n(c, "created")).unwrap_or(0)),
            s(c, "name").to_owned(),
        ]
    });
    print!(
        "{}",
        table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "SIZE",
                "VIRTUAL SIZE",
                "CREATED",
                "NAMES"
            ],
            &rows
        )
    );
    println!("\nLocal Volumes space usage:\n");
    let rows = rows_of(v, "volume_details", |vol| {
        vec![
            s(vol, "name").to_owned(),
            n(vol, "users").to_string(),
            human_size(n(vol, "size")),
        ]
    });
    print!("{}", table(&["VOLUME NAME", "LINKS", "SIZE"], &rows));
}
