//! Applications: the tenant unit.

use super::audit_log::Audit;
use super::{Caller, Kms};
use crate::api_key::token_format::TokenPrefix;
use crate::application::AppSecurity;
use crate::application::{AppStatus, Application};
use crate::error::{Error, FieldErrors, Result};
use crate::page::{Page, PageRequest};
use crate::policy::scope::shown;
use crate::requests::{validate_name, validate_networks, AppUpdate, NewApp};
use crate::store::Mutation;

impl Kms {
    /// Creates an application (`app.write`; system callers only).
    pub fn create_app(&self, caller: &Caller, req: NewApp) -> Result<Application> {
        caller.require_global(&*self.snapshot()?, "app.write")?;
        let mut errs = FieldErrors::default();
        let name = validate_name(&mut errs, "name", &req.name);
        let prefix = match req.token_prefix.as_deref() {
            None => Some(TokenPrefix::default_prefix()),
            Some(p) => errs.take(TokenPrefix::parse(p)),
        };
        let security = AppSecurity {
            ip_allow: validate_networks(&mut errs, req.ip_allow.as_deref().unwrap_or_default()),
            require_signed_requests: req.require_signed_requests.unwrap_or(false),
            signing_secret: None,
        };
        errs.finish()?;
        let (Some(name), Some(token_prefix)) = (name, prefix) else {
            return Err(Error::internal("validation passed without values"));
        };
        let app = Application {
            id: self.new_id("app_", 16)?,
            name,
            token_prefix,
            status: AppStatus::Active,
            created_at: self.inner.clock.now(),
            usage_price: None,
            security,
        };
        self.commit(
            Some(caller),
            Audit::success("app.create", app.id.clone()).app(app.id.clone()),
            vec![Mutation::InsertApp(app.clone())],
        )?;
        Ok(app)
    }

    /// Lists the applications the caller can see (`app.read`), by id.
    pub fn list_apps(&self, caller: &Caller, page: PageRequest) -> Result<Page<Application>> {
        caller.require(&*self.snapshot()?, "app.read")?;
        if !caller.is_system() {
            let own = self.inner.store.get_app(caller.app_id())?;
            let items: Vec<Application> = own
                .into_iter()
                .filter(|a| page.cursor.as_deref().is_none_or(|c| a.id.as_str() > c))
                .collect();
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        paginate(
            &page,
            |after, limit| Ok(self.inner.store.list_apps(after, limit)?),
            |a| &a.id,
        )
    }

    /// One application (`app.read`).
    pub fn get_app(&self, caller: &Caller, id: &str) -> Result<Application> {
        caller.require(&*self.snapshot()?, "app.read")?;
        self.visible_app(caller, id)
    }

    /// Renames, disables or re-enables an application (`app.write`; renaming needs a
    /// system caller, as names are shared by every tenant). Disabling makes every token of
    /// the application fail verification at once.
    pub fn update_app(&self, caller: &Caller, id: &str, req: AppUpdate) -> Result<Application> {
        let snap = self.snapshot()?;
        caller.require(&snap, "app.write")?;
        let stored = self.visible_app(caller, id)?;
        let mut app = stored.clone();
        let mut errs = FieldErrors::default();
        if let Some(n) = req.name.as_deref() {
            if let Some(n) = validate_name(&mut errs, "name", n) {
                app.name = n;
            }
        }
        if let Some(s) = req.status.as_deref() {
            match AppStatus::parse(s) {
                Some(st) => app.status = st,
                None => errs.push("status", "must be \"active\" or \"disabled\""),
            }
        }
        if let Some(nets) = req.ip_allow.as_deref() {
            app.security.ip_allow = validate_networks(&mut errs, nets);
        }
        if let Some(required) = req.require_signed_requests {
            app.security.require_signed_requests = required;
        }
        match &req.usage_price {
            None => {}
            Some(None) => app.usage_price = None,
            Some(Some(p)) => match crate::usage::UsagePrice::parse(&p.per_thousand, &p.currency) {
                Ok(price) => app.usage_price = Some(price),
                Err(problem) => errs.push("usage_price", problem),
            },
        }
        errs.finish()?;
        if app.name != stored.name {
            // Names are one namespace across tenants: a tenant renaming its application
            // could probe other tenants' names by the conflicts. Renaming, like creating,
            // is for system callers.
            caller.require_global(&snap, "app.write")?;
        }
        if app == stored {
            // Nothing changes, so nothing is written or audited.
            return Ok(app);
        }
        if app.is_system() && app.status == AppStatus::Disabled {
            return Err(Error::Conflict(
                "the system application cannot be disabled".into(),
            ));
        }
        let audit = Audit::success("app.update", app.id.clone())
            .app(app.id.clone())
            .details(serde_json::json!({
                "name": app.name, "status": app.status, "ip_allow": app.security.ip_allow,
                "require_signed_requests": app.security.require_signed_requests,
                "usage_price": app.usage_price,
            }));
        self.commit(Some(caller), audit, vec![Mutation::UpdateApp(app.clone())])?;
        Ok(app)
    }

    /// Deletes an application and all its tokens (`app.write`; system callers only).
    pub fn delete_app(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require_global(&*self.snapshot()?, "app.write")?;
        let app = self.visible_app(caller, id)?;
        if app.is_system() {
            return Err(Error::Conflict(
                "the system application cannot be deleted".into(),
            ));
        }
        self.commit(
            Some(caller),
            Audit::success("app.delete", app.id.clone()).app(app.id.clone()),
            vec![Mutation::DeleteApp(app.id)],
        )?;
        Ok(())
    }

    /// The application `id` if the caller may see it; `NotFound` otherwise, so that other
    /// tenants' applications are indistinguishable from missing ones.
    pub(crate) fn visible_app(&self, caller: &Caller, id: &str) -> Result<Application> {
        let not_found = || Error::NotFound(format!("application {} does not exist", shown(id)));
        if !caller.sees_app(id) {
            return Err(not_found());
        }
        self.inner.store.get_app(id)?.ok_or_else(not_found)
    }

    /// A fresh random id: `prefix` and `len` base62 characters.
    pub(crate) fn new_id(&self, prefix: &str, len: usize) -> Result<String> {
        let mut id = String::from(prefix);
        crate::api_key::token_format::push_base62(&mut id, len, self.inner.random.as_ref())?;
        Ok(id)
    }
}

/// Longest cursor a listing accepts (cursors are ids).
const MAX_CURSOR_LEN: usize = 128;

/// Cursor pagination over a store listing ordered by id: fetches one extra item to learn
/// whether there is a next page.
pub(crate) fn paginate<T>(
    page: &PageRequest,
    fetch: impl FnOnce(Option<&str>, usize) -> Result<Vec<T>>,
    id: impl Fn(&T) -> &String,
) -> Result<Page<T>> {
    let limit = page.limit.unwrap_or(crate::page::DEFAULT_PAGE_LIMIT);
    if !(1..=crate::page::MAX_PAGE_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be from 1 to {}", crate::page::MAX_PAGE_LIMIT),
        ));
    }
    if let Some(c) = page.cursor.as_deref() {
        if c.is_empty()
            || c.len() > MAX_CURSOR_LEN
            || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::invalid(
                "cursor",
                "is not a cursor returned by this listing",
            ));
        }
    }
    let mut items = fetch(page.cursor.as_deref(), limit as usize + 1)?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}
