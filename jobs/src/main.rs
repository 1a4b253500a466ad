//! The `weatherflow` binary: a thin shell over the library's CLI.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    weatherflow::init_telemetry();
    match weatherflow::execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
