// Host-side check of the VlrtTokenMerge TensorRT plugin, without TensorRT's libraries or a GPU.
// Loads libvlrt_kernels.so with dlopen, finds the creator through getCreators() as TensorRT's
// loadLibrary does, and calls every plugin method that needs neither libnvinfer nor a device:
// creation from fields, types and formats, shape checks, serialisation, clone, and enqueue's
// refusals (which return before any CUDA call). Prints one line per check and
// "N passed, M failed"; exits non-zero on a failure.
// Usage: plugin_host_check /path/to/libvlrt_kernels.so
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

int gPassed = 0;
int gFailed = 0;

void expect(bool ok, char const* what) {
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    (ok ? gPassed : gFailed) += 1;
}

class Logger : public ILogger {
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override {
        if (severity <= Severity::kERROR) errors.emplace_back(msg);
    }
    std::vector<std::string> errors;
};

class Finder : public ILoggerFinder {
public:
    ILogger* findLogger() override {
        ++calls;
        return current;
    }
    Logger logger;
    ILogger* current = &logger;
    int calls = 0;
};

PluginTensorDesc tensor(DataType type, std::vector<int64_t> const& dims, TensorFormat format = TensorFormat::kLINEAR) {
    PluginTensorDesc d{};
    d.type = type;
    d.format = format;
    d.dims.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) d.dims.d[i] = dims[i];
    return d;
}

DynamicPluginTensorDesc dynamic(PluginTensorDesc const& d, int64_t maxTokens) {
    DynamicPluginTensorDesc out{};
    out.desc = d;
    out.min = d.dims;
    out.opt = d.dims;
    out.max = d.dims;
    if (d.dims.nbDims >= 2) out.max.d[1] = maxTokens;
    return out;
}

IPluginV3* create(IPluginCreatorV3One* creator, PluginField const* fields, int32_t count) {
    PluginFieldCollection fc{count, fields};
    return creator->createPlugin("merge", &fc, TensorRTPhase::kBUILD);
}

bool supports(IPluginV3OneBuild* build, DataType x, DataType size, DataType out0, DataType out1,
              TensorFormat format = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc io[4] = {dynamic(tensor(x, {2, 197, 64}, format), 197), dynamic(tensor(size, {2, 197}), 197),
                                     dynamic(tensor(out0, {2, 181, 64}), 181), dynamic(tensor(out1, {2, 181}), 181)};
    for (int32_t pos = 0; pos < 4; ++pos)
        if (!build->supportsFormatCombination(pos, io, 2, 2)) return false;
    return true;
}

void checkPlugin(IPluginV3* plugin, Finder& finder) {
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    expect(core && build && runtime, "plugin has core, build and runtime capabilities");
    if (!core || !build || !runtime) return;
    expect(std::strcmp(core->getPluginName(), "VlrtTokenMerge") == 0, "plugin name");
    expect(std::strcmp(core->getPluginVersion(), "1") == 0, "plugin version");
    expect(build->getNbOutputs() == 2, "two outputs");

    DataType in[2] = {DataType::kHALF, DataType::kHALF}, out[2] = {DataType::kFLOAT, DataType::kFLOAT};
    expect(build->getOutputDataTypes(out, 2, in, 2) == 0 && out[0] == DataType::kHALF && out[1] == DataType::kHALF,
           "output types follow x's type");

    auto const F = DataType::kFLOAT, H = DataType::kHALF;
    expect(supports(build, F, F, F, F), "accepts float32 everywhere");
    expect(supports(build, H, H, H, H), "accepts float16 everywhere");
    expect(!supports(build, H, F, H, H), "refuses float32 size with float16 x");
    expect(!supports(build, DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32), "refuses int32");
    expect(!supports(build, F, F, F, F, TensorFormat::kCHW32), "refuses a non-linear format");

    DynamicPluginTensorDesc cfgIn[2] = {dynamic(tensor(F, {2, -1, 64}), 577), dynamic(tensor(F, {2, -1}), 577)};
    DynamicPluginTensorDesc cfgOut[2] = {dynamic(tensor(F, {2, -1, 64}), 561), dynamic(tensor(F, {2, -1}), 561)};
    expect(build->configurePlugin(cfgIn, 2, cfgOut, 2) == 0, "configure with N up to 577");
    cfgIn[0].max.d[1] = 4096;
    expect(build->configurePlugin(cfgIn, 2, cfgOut, 2) != 0, "configure refuses N up to 4096 (kernel limit 2048)");

    PluginTensorDesc shapeIn[2] = {tensor(F, {2, 197, 64}), tensor(F, {2, 197})};
    PluginTensorDesc shapeOut[2] = {tensor(F, {2, 181, 64}), tensor(F, {2, 181})};
    expect(runtime->onShapeChange(shapeIn, 2, shapeOut, 2) == 0, "N = 197 accepted for r = 16");
    PluginTensorDesc tiny[2] = {tensor(F, {2, 9, 64}), tensor(F, {2, 9})};
    finder.logger.errors.clear();
    expect(runtime->onShapeChange(tiny, 2, shapeOut, 2) != 0, "N = 9 refused for r = 16 (at most 4)");
    expect(!finder.logger.errors.empty(), "the refusal is logged");

    void const* inputs[2] = {nullptr, nullptr};
    void* outputs[2] = {nullptr, nullptr};
    expect(runtime->enqueue(shapeIn, shapeOut, inputs, outputs, nullptr, nullptr) != 0,
           "enqueue refuses null buffers before touching CUDA");

    PluginFieldCollection const* fields = runtime->getFieldsToSerialize();
    expect(fields && fields->nbFields == 1 && std::strcmp(fields->fields[0].name, "r") == 0 &&
               fields->fields[0].type == PluginFieldType::kINT32 &&
               *static_cast<int32_t const*>(fields->fields[0].data) == 16,
           "serialises r = 16 as int32");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s libvlrt_kernels.so\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    expect(getCreators != nullptr && setLoggerFinder != nullptr, "exports getCreators and setLoggerFinder");
    if (!getCreators || !setLoggerFinder) return 1;
    static Finder finder;
    setLoggerFinder(&finder);

    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    expect(count == 1 && creators && creators[0], "one creator");
    if (count != 1 || !creators || !creators[0]) return 1;
    InterfaceInfo info = creators[0]->getInterfaceInfo();
    expect(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0 && info.major == 1, "creator is an IPluginCreatorV3One");
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    expect(std::strcmp(creator->getPluginName(), "VlrtTokenMerge") == 0 &&
               std::strcmp(creator->getPluginVersion(), "1") == 0 && std::strcmp(creator->getPluginNamespace(), "") == 0,
           "creator name, version, namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    expect(names && names->nbFields == 1 && std::strcmp(names->fields[0].name, "r") == 0, "one attribute, r");

    int32_t r32 = 16;
    int64_t r64 = 16, negative = -1;
    PluginField f32("r", &r32, PluginFieldType::kINT32, 1), f64("r", &r64, PluginFieldType::kINT64, 1);
    PluginField bad("r", &negative, PluginFieldType::kINT64, 1);
    finder.logger.errors.clear();
    expect(create(creator, nullptr, 0) == nullptr && !finder.logger.errors.empty(), "no r: refused and logged");
    expect(create(creator, &bad, 1) == nullptr, "r = -1 refused");
    IPluginV3* from64 = create(creator, &f64, 1);
    expect(from64 != nullptr, "r as int64 (ONNX attributes are int64)");
    delete from64;
    IPluginV3* plugin = create(creator, &f32, 1);
    expect(plugin != nullptr, "r as int32");
    if (plugin) {
        checkPlugin(plugin, finder);
        IPluginV3* copy = plugin->clone();
        expect(copy != nullptr, "clone");
        if (copy) checkPlugin(copy, finder);
        delete copy;
        delete plugin;
    }
    // TensorRT may change the logger after loading the library: the plugin must ask each time.
    int32_t rBad = -5;
    PluginField badField("r", &rBad, PluginFieldType::kINT32, 1);
    Logger later;
    finder.logger.errors.clear();
    finder.current = &later;
    int const callsBefore = finder.calls;
    expect(create(creator, &badField, 1) == nullptr && later.errors.size() == 1 && finder.logger.errors.empty() &&
               finder.calls == callsBefore + 1,
           "errors go to the logger the finder returns now, not the one at load");
    finder.current = nullptr;
    expect(create(creator, &badField, 1) == nullptr, "no logger: refused without logging");
    setLoggerFinder(nullptr);
    expect(create(creator, &badField, 1) == nullptr && later.errors.size() == 1, "no finder: refused without logging");

    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}
