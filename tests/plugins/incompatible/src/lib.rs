//! Test plugin built against an incompatible interface: it exports a root module with the
//! harness's module name and interface version, but `attacks` returns a different type,
//! as a plugin built against a changed interface whose version was not bumped would.

use abi_stable::{
    StableAbi, declare_root_module_statics, export_root_module,
    library::RootModule,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::{RStr, RVec},
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLib {
    pub library_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub attacks: extern "C" fn() -> RVec<u64>,
}

impl RootModule for PluginLibRef {
    declare_root_module_statics! {PluginLibRef}
    const BASE_NAME: &'static str = "kdharness_plugin";
    const NAME: &'static str = "kdharness_plugin";
    // The harness's own interface version, so that the layout check is what fails.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(kdharness_plugin_api::INTERFACE_VERSION);
}

extern "C" fn attacks() -> RVec<u64> {
    RVec::new()
}

#[export_root_module]
pub fn root() -> PluginLibRef {
    PluginLib { library_version: RStr::from_str("0.1.0"), attacks }.leak_into_prefix()
}
