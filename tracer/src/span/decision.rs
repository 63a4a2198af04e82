//! A trace's sampling decision and who took it (`_dd.p.dm`); the sampler that takes it
//! is `sampling/`.

/// Who decided (`_dd.p.dm`, without its leading `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `-0`: the default rate, before the agent sent any.
    Default,
    /// `-1`: the agent's rate for the service.
    AgentRate,
    /// `-3`: a sampling rule or `DD_TRACE_SAMPLE_RATE`.
    Rule,
    /// `-4`: `manual.keep` / `manual.drop` or an explicit priority.
    Manual,
    /// A decision taken upstream and propagated to us, with its mechanism number.
    Propagated(u8),
}

impl Mechanism {
    /// The `_dd.p.dm` value.
    pub fn as_dm(self) -> &'static str {
        match self {
            Self::Default => "-0",
            Self::AgentRate => "-1",
            Self::Rule => "-3",
            Self::Manual => "-4",
            Self::Propagated(n) => match n {
                0 => "-0",
                1 => "-1",
                2 => "-2",
                3 => "-3",
                4 => "-4",
                5 => "-5",
                6 => "-6",
                7 => "-7",
                8 => "-8",
                9 => "-9",
                10 => "-10",
                11 => "-11",
                12 => "-12",
                _ => "-0",
            },
        }
    }

    /// Parses a `_dd.p.dm` value such as `-3` (or the historical `hash-3`).
    pub fn from_dm(dm: &str) -> Option<Self> {
        let n = dm.rsplit('-').next()?.parse::<u8>().ok()?;
        dm.contains('-').then_some(Self::Propagated(n))
    }
}

/// A trace's sampling decision, taken once and shared by every chunk of the trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDecision {
    /// `_sampling_priority_v1`: -1, 0, 1 or 2.
    pub priority: i8,
    /// `_dd.p.dm`.
    pub mechanism: Mechanism,
    /// `_dd.rule_psr`, when a rule decided.
    pub rule_rate: Option<f64>,
    /// `_dd.limit_psr`, when the rate limiter was consulted.
    pub limit_rate: Option<f64>,
    /// `_dd.agent_psr`, when the agent-rate sampler decided.
    pub agent_rate: Option<f64>,
}

impl SamplingDecision {
    /// A decision with only a priority and a mechanism.
    pub const fn new(priority: i8, mechanism: Mechanism) -> Self {
        Self {
            priority,
            mechanism,
            rule_rate: None,
            limit_rate: None,
            agent_rate: None,
        }
    }

    /// Whether the trace is kept.
    pub fn is_keep(&self) -> bool {
        self.priority > 0
    }
}
