//! The permission check beside its peers, in one run of one binary: kms's compiled
//! snapshot, casbin-rs (`Enforcer` and `CachedEnforcer`) and cedar-policy
//! (`Authorizer::is_authorized`) on the *same* generated RBAC policy, plus the bare
//! intern-and-lookup floor. Results are in `docs/PERFORMANCE.md` ("Permission check beside
//! casbin-rs and cedar").
//!
//! ```text
//! cargo bench -p kms-benches --features peers --bench peers -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Without the `peers` feature (as CI's `cargo clippy --all-targets` builds it) only kms and
//! the floor are measured, so CI does not compile casbin and cedar.
//!
//! The policy (`benches/common/rbac.rs`): 10, 1,000 or 100,000 grants over two role chains
//! of depth 1, 5 or 20; the user holds the top of one chain. Per cell and engine two
//! benchmarks, `allowed` (a permission granted at the bottom of the user's chain, so the
//! whole chain is walked) and `denied` (a permission granted only in the other chain).
//! Before measuring, every engine must give the same decisions for both requests.
//!
//! - `ours`: `PermissionSnapshot::check` against the user's precompiled `EffectiveSet`.
//! - `ours_effective_and_check`: the user's `EffectiveSet` compiled from its role and then
//!   checked, i.e. what kms pays when it has no compiled set for the subject yet.
//! - `casbin_enforcer`: `Enforcer::enforce((user, permission))`, model `r = sub, act`,
//!   `m = r.act == p.act && g(r.sub, p.sub)` (the cheap test first), one `p` line per
//!   grant, one `g` line per inheritance step and one for the user.
//! - `casbin_cached_enforcer`: the same through `CachedEnforcer`, whose result cache
//!   answers every call after the first.
//! - `cedar`: `Authorizer::is_authorized` with one `permit(principal in Role::"…", action
//!   == Action::"…", resource);` per grant and the chains as entity parents; the request
//!   and entities are built before the loop.
//! - `floor`: a `HashMap<Box<str>, u32>` lookup and a bit test.

use std::error::Error;
use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use kms_benches::{full_run, SetupResult};

#[path = "common/rbac.rs"]
mod rbac;
use rbac::Rbac;

fn main() -> Result<(), Box<dyn Error>> {
    let mut c = Criterion::default().configure_from_args();
    let grants: &[usize] = if full_run() {
        &[10, 1_000, 100_000]
    } else {
        &[10, 1_000]
    };
    for &g in grants {
        for depth in [1, 5, 20] {
            cell(&mut c, g, depth)?;
        }
    }
    c.final_summary();
    Ok(())
}

/// Every engine on one policy size.
fn cell(c: &mut Criterion, grants: usize, depth: usize) -> SetupResult<()> {
    let policy = Rbac::new(grants, depth)?;
    let start = Instant::now();
    let (snapshot, set, top) = policy.kms()?;
    println!(
        "set-up, {grants} grants, depth {depth}: kms policy and snapshot {:.1?}",
        start.elapsed()
    );
    let floor = policy.floor();
    let requests = [("allowed", &policy.allowed), ("denied", &policy.denied)];
    for (what, permission) in requests {
        let expected = what == "allowed";
        if snapshot.check(&set, permission) != expected || floor.holds(permission) != expected {
            return Err(format!(
                "kms or the floor decided the {what} request wrongly ({} grants, depth {})",
                policy.grants, policy.depth
            )
            .into());
        }
    }
    #[cfg(feature = "peers")]
    let peers = peers::Peers::new(&policy)?;

    let mut group = c.benchmark_group(format!("permission_peers/g{grants}_d{depth}"));
    if grants >= 100_000 {
        // casbin's enforce and cedar scan every policy: milliseconds per call here.
        group.sample_size(10);
    }
    for (what, permission) in requests {
        let p = permission.as_str();
        group.bench_function(BenchmarkId::new("ours", what), |b| {
            b.iter(|| snapshot.check(black_box(&set), black_box(p)))
        });
        group.bench_function(BenchmarkId::new("ours_effective_and_check", what), |b| {
            b.iter(|| {
                let s = snapshot.effective(std::iter::empty(), std::iter::once(black_box(&top)));
                snapshot.check(&s, black_box(p))
            })
        });
        #[cfg(feature = "peers")]
        peers.bench(&mut group, what, p);
        group.bench_function(BenchmarkId::new("floor", what), |b| {
            b.iter(|| floor.holds(black_box(p)))
        });
    }
    group.finish();
    Ok(())
}

#[cfg(feature = "peers")]
mod peers {
    //! casbin-rs and cedar-policy, built from the same [`Rbac`] policy.

    use std::hint::black_box;
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::Instant;

    use casbin::{
        CachedEnforcer, CoreApi, DefaultModel, DefaultRoleManager, Enforcer, MemoryAdapter,
        MgmtApi, RoleManager,
    };
    use cedar_policy::{
        Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
        PolicySet, Request,
    };
    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, BenchmarkId};
    use kms_benches::SetupResult;
    use parking_lot::RwLock;

    use crate::rbac::{Rbac, USER};

    /// casbin's RBAC model for the policy: a subject and a permission per request.
    const CASBIN_MODEL: &str = "
[request_definition]
r = sub, act

[policy_definition]
p = sub, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.act == p.act && g(r.sub, p.sub)
";

    /// The engines under comparison, loaded with one policy.
    pub(crate) struct Peers {
        enforcer: Enforcer,
        cached: CachedEnforcer,
        authorizer: Authorizer,
        policies: PolicySet,
        entities: Entities,
        allowed: Request,
        denied: Request,
    }

    impl Peers {
        /// Loads `policy` into each engine and checks that each decides both requests as
        /// kms does.
        pub(crate) fn new(policy: &Rbac) -> SetupResult<Self> {
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            let start = Instant::now();
            let enforcer: Enforcer = rt.block_on(casbin_load(policy))?;
            let casbin_setup = start.elapsed();
            let cached: CachedEnforcer = rt.block_on(casbin_load(policy))?;
            let start = Instant::now();
            let (policies, entities) = cedar_load(policy)?;
            println!(
                "set-up, {} grants, depth {}: casbin Enforcer {:.1?}, cedar {:.1?}",
                policy.grants,
                policy.depth,
                casbin_setup,
                start.elapsed()
            );
            let request = |permission: &str| -> SetupResult<Request> {
                Ok(Request::new(
                    uid("User", USER)?,
                    uid("Action", permission)?,
                    uid("Resource", "any")?,
                    Context::empty(),
                    None,
                )?)
            };
            let peers = Peers {
                enforcer,
                cached,
                authorizer: Authorizer::new(),
                policies,
                entities,
                allowed: request(&policy.allowed)?,
                denied: request(&policy.denied)?,
            };
            for (what, permission) in [("allowed", &policy.allowed), ("denied", &policy.denied)] {
                let expected = what == "allowed";
                let request = peers.request(what);
                let cedar = peers
                    .authorizer
                    .is_authorized(request, &peers.policies, &peers.entities)
                    .decision()
                    == Decision::Allow;
                // Twice through the cached enforcer: the first fills its cache.
                let answers = [
                    (
                        "casbin Enforcer",
                        peers.enforcer.enforce((USER, permission))?,
                    ),
                    (
                        "casbin CachedEnforcer",
                        peers.cached.enforce((USER, permission))?,
                    ),
                    (
                        "casbin CachedEnforcer",
                        peers.cached.enforce((USER, permission))?,
                    ),
                    ("cedar", cedar),
                ];
                for (engine, answer) in answers {
                    if answer != expected {
                        return Err(format!(
                            "{engine} decided the {what} request {answer}, kms {expected} \
                             ({} grants, depth {})",
                            policy.grants, policy.depth
                        )
                        .into());
                    }
                }
            }
            Ok(peers)
        }

        fn request(&self, what: &str) -> &Request {
            if what == "allowed" {
                &self.allowed
            } else {
                &self.denied
            }
        }

        /// Adds the peers' benchmarks of one request to `group`.
        pub(crate) fn bench(
            &self,
            group: &mut BenchmarkGroup<'_, WallTime>,
            what: &str,
            permission: &str,
        ) {
            group.bench_function(BenchmarkId::new("casbin_enforcer", what), |b| {
                b.iter(|| self.enforcer.enforce(black_box((USER, permission))))
            });
            group.bench_function(BenchmarkId::new("casbin_cached_enforcer", what), |b| {
                b.iter(|| self.cached.enforce(black_box((USER, permission))))
            });
            let request = self.request(what);
            group.bench_function(BenchmarkId::new("cedar", what), |b| {
                b.iter(|| {
                    self.authorizer.is_authorized(
                        black_box(request),
                        &self.policies,
                        &self.entities,
                    )
                })
            });
        }
    }

    /// An enforcer of either kind over a `MemoryAdapter` holding `policy`.
    async fn casbin_load<E: CoreApi + MgmtApi>(policy: &Rbac) -> SetupResult<E> {
        let model = DefaultModel::from_str(CASBIN_MODEL).await?;
        let mut e = E::new(model, MemoryAdapter::default()).await?;
        // The default role manager follows at most 10 inheritance steps; the deepest chain
        // here has 20 (and one more from the user to its role).
        let rm: Arc<RwLock<dyn RoleManager>> =
            Arc::new(RwLock::new(DefaultRoleManager::new(policy.depth + 2)));
        e.set_role_manager(rm)?;
        let grants = policy
            .grant_list()
            .into_iter()
            .map(|(role, permission)| vec![role.to_owned(), permission.to_owned()])
            .collect();
        e.add_policies(grants).await?;
        let mut links = vec![vec![
            USER.to_owned(),
            policy.roles[policy.user_role].name.clone(),
        ]];
        for role in &policy.roles {
            if let Some(i) = role.inherits {
                links.push(vec![role.name.clone(), policy.roles[i].name.clone()]);
            }
        }
        e.add_grouping_policies(links).await?;
        Ok(e)
    }

    fn uid(kind: &str, id: &str) -> SetupResult<EntityUid> {
        Ok(EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(kind)?,
            EntityId::new(id),
        ))
    }

    /// One `permit` per grant; the user and the roles as entities, each role's parent
    /// being the role it inherits (so `principal in Role::"held-l0"` holds for the user).
    fn cedar_load(policy: &Rbac) -> SetupResult<(PolicySet, Entities)> {
        let mut src = String::with_capacity(policy.grants * 80);
        for (role, permission) in policy.grant_list() {
            src.push_str(&format!(
                "permit(principal in Role::\"{role}\", action == Action::\"{permission}\", resource);\n"
            ));
        }
        let policies = PolicySet::from_str(&src)?;
        let mut entities = vec![Entity::new_no_attrs(
            uid("User", USER)?,
            [uid("Role", &policy.roles[policy.user_role].name)?].into(),
        )];
        for role in &policy.roles {
            let parents = match role.inherits {
                Some(i) => [uid("Role", &policy.roles[i].name)?].into(),
                None => Default::default(),
            };
            entities.push(Entity::new_no_attrs(uid("Role", &role.name)?, parents));
        }
        Ok((policies, Entities::from_entities(entities, None)?))
    }
}
