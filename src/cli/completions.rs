//! `countersign completions SHELL`: a completion script on stdout.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign completions bash > ~/.local/share/bash-completion/completions/countersign
  countersign completions zsh > ~/.zfunc/_countersign
  countersign completions fish > ~/.config/fish/completions/countersign.fish
  countersign completions elvish > ~/.config/elvish/lib/countersign.elv
  countersign completions powershell >> $PROFILE

Install (create the directory first if it is missing):
  bash        needs the bash-completion package; works in the next shell
  zsh         in ~/.zshrc, before `compinit`: fpath=(~/.zfunc $fpath)
  fish        works in the next shell
  elvish      in ~/.config/elvish/rc.elv: eval (slurp < ~/.config/elvish/lib/countersign.elv)
  powershell  appended to your profile; works in the next shell")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut super::Cli::command(),
        "countersign",
        &mut script,
    );
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        // `| head` closed the pipe: what was wanted was written.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "countersign: cannot write the completion script: {e}; redirect it to a file you can write, e.g. `countersign completions {} > countersign.completion`",
                args.shell
            );
            ExitCode::FAILURE
        }
    }
}
