//! The command line.

use super::*;

// ---------------------------------------------------------------- the tool

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) out: PathBuf,
    pub(crate) quick: bool,
    pub(crate) ways: Vec<Way>,
    pub(crate) config: String,
    /// `--scenario soak`: the soak instead of the overload scenarios.
    pub(crate) soak: bool,
    pub(crate) soak_secs: u64,
    /// `--scenario creep`: the creep run instead of the overload scenarios.
    pub(crate) creep: bool,
    pub(crate) creep_secs: u64,
    /// `--static-caps`: WaitState with learning off at each of these caps, as extra ways.
    pub(crate) static_caps: Vec<u64>,
    /// `--replot`: with `--scenario soak`, redraw soak.png from `--out`'s soak.json.
    pub(crate) replot: bool,
    /// `--scenario fleet|cp-loss`: the fleet scenarios to run.
    pub(crate) fleet: Vec<fleet::FleetScenario>,
    /// `--ways` for the fleet scenarios (`None`: each scenario's default).
    pub(crate) fleet_ways: Option<Vec<fleet::FleetWay>>,
}

pub(crate) fn args() -> Result<Args, String> {
    let mut out = Args {
        scenarios: vec![SCENARIOS[0]],
        out: PathBuf::from("target/scenarios"),
        quick: false,
        ways: Way::ALL.to_vec(),
        config: WAITSTATE_TOML.to_owned(),
        soak: false,
        soak_secs: 600,
        creep: false,
        creep_secs: 600,
        static_caps: Vec::new(),
        replot: false,
        fleet: Vec::new(),
        fleet_ways: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => out.quick = true,
            "--replot" => out.replot = true,
            "--config" => {
                let path = it.next().ok_or("--config takes a path")?;
                out.config = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
            }
            "--soak-secs" => {
                out.soak_secs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--soak-secs takes a number of seconds")?;
            }
            "--creep-secs" => {
                out.creep_secs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 10)
                    .ok_or("--creep-secs takes a number of seconds, at least 10")?;
            }
            "--static-caps" => {
                out.static_caps = it
                    .next()
                    .and_then(|l| l.split(',').map(|n| n.parse().ok()).collect())
                    .filter(|caps: &Vec<u64>| caps.iter().all(|n| *n > 0))
                    .ok_or("--static-caps takes a list of caps, e.g. 10,14,20")?;
            }
            "--out" => out.out = it.next().ok_or("--out takes a directory")?.into(),
            "--scenario" => {
                let name = it.next().ok_or("--scenario takes a name or `all`")?;
                out.soak = name == "soak";
                out.creep = name == "creep";
                out.fleet = fleet::FLEET_SCENARIOS
                    .iter()
                    .filter(|f| f.name == name)
                    .copied()
                    .collect();
                out.scenarios = if out.soak || out.creep || !out.fleet.is_empty() {
                    Vec::new()
                } else if name == "all" {
                    SCENARIOS.to_vec()
                } else {
                    vec![*SCENARIOS.iter().find(|s| s.name == name).ok_or_else(|| {
                        let names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                        format!(
                            "unknown scenario `{name}` (one of {}, fleet, cp-loss, creep, soak, all)",
                            names.join(", ")
                        )
                    })?]
                };
            }
            "--ways" => {
                let list = it
                    .next()
                    .ok_or("--ways takes a list: none,static,acc,waitstate")?;
                if list.split(',').any(|k| k == "local" || k == "fleet") {
                    out.fleet_ways = Some(
                        list.split(',')
                            .map(|k| {
                                fleet::FleetWay::ALL
                                    .into_iter()
                                    .find(|w| w.key() == k)
                                    .ok_or_else(|| {
                                        format!("unknown way `{k}` (none, static, local, fleet)")
                                    })
                            })
                            .collect::<Result<_, _>>()?,
                    );
                    continue;
                }
                out.ways = list
                    .split(',')
                    .map(|k| {
                        Way::ALL.into_iter().find(|w| w.key() == k).ok_or_else(|| {
                            format!("unknown way `{k}` (none, static, acc, waitstate)")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --scenario, --out, --quick, --ways, --static-caps, --config, --soak-secs, --creep-secs)"
                ));
            }
        }
    }
    Ok(out)
}
